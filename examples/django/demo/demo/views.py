import time

from django.http import Http404, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

import sidecar_beacons
from derps.models import Derp


@csrf_exempt
def home(request):
    return HttpResponse('Rate My Derp\n', content_type='text/plain')


def derp_detail(request, pk):
    if pk > 1000:
        raise Http404('no such derp')  # a 404 of a resolved view: tagged view=derp-detail, status=404
    return HttpResponse('derp %d\n' % pk, content_type='text/plain')


def about(request):
    return HttpResponse('about\n', content_type='text/plain')


def slow(request):
    time.sleep(0.05)
    return HttpResponse('slow\n', content_type='text/plain')


def boom(request):
    raise RuntimeError('a failing view')  # Django answers 500; the point says status=500


@csrf_exempt
def upload(request):
    if request.method != 'POST':
        return HttpResponse(status=405)
    derp = Derp.objects.create(name=request.POST.get('name', 'derp'), species=request.POST.get('species', 'dog'))
    return JsonResponse({'id': derp.pk}, status=201)  # the post_save signal sends a derp_uploads beacon


def beacon_stats(request):
    return JsonResponse(sidecar_beacons.stats())
