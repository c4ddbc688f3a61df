from django.urls import path

from . import views

urlpatterns = [
    path('', views.home, name='home'),
    path('derps/<int:pk>/', views.derp_detail, name='derp-detail'),
    path('derps/', views.upload, name='derp-upload'),
    path('about/', views.about),  # no name: tagged with its route, "about/"
    path('slow/', views.slow, name='slow'),
    path('boom/', views.boom, name='boom'),
    path('beacon-stats/', views.beacon_stats, name='beacon-stats'),
]
