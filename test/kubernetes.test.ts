import t from 'tap'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, posix } from 'node:path'
// `yaml` comes with tap (tap-yaml); no other YAML parser is installed.
import { parseAllDocuments } from 'yaml'
import { Deployment } from 'kubernetes-models/apps/v1'
import { ConfigMap, Secret, Service, type IContainer, type IEnvVar, type IProbe } from 'kubernetes-models/v1'
import { loadConfig } from '../src/config'

/**
 * deploy/kubernetes/: every manifest is valid against the Kubernetes schema (kubernetes-models,
 * offline: no cluster here), has no misspelled fields, and the app + sidecar pod is wired the way
 * the sidecar needs (README "Kubernetes").
 */
const ROOT = join(__dirname, '..')
const DIR = join(ROOT, 'deploy', 'kubernetes')

interface Doc { file: string, obj: Record<string, any> }

const files = readdirSync(DIR).filter(f => /\.ya?ml$/.test(f)).sort()
const docs: Doc[] = files.flatMap(file => parseAllDocuments(readFileSync(join(DIR, file), 'utf8')).map(d => {
  if (d.errors.length > 0) throw new Error(`${file}: ${d.errors.map(e => e.message).join('; ')}`)
  return { file, obj: d.toJS() as Record<string, any> }
})).filter(d => d.obj !== null)

const ofKind = (kind: string): Doc[] => docs.filter(d => d.obj.kind === kind)
const deployments = ofKind('Deployment').map(d => new Deployment(d.obj as any))
const configMaps = ofKind('ConfigMap').map(d => new ConfigMap(d.obj as any))
const secrets = ofKind('Secret').map(d => new Secret(d.obj as any))

// ---- misspelled fields ------------------------------------------------------------------------
// kubernetes-models' validate() accepts unknown properties, so `readinesProbe:` would pass it and
// be dropped by the API server. The field names each object may have are read from the package's
// compiled schema validators (`void 0===data.<field>||…` for every declared property).
const modelsDir = dirname(require.resolve('kubernetes-models/package.json'))
const machineryDir = dirname(require.resolve('@kubernetes-models/apimachinery/package.json', { paths: [modelsDir] }))
const knownFields = new Map<string, Set<string>>()
function fieldsOf (schema: string): Set<string> {
  let known = knownFields.get(schema)
  if (known === undefined) {
    const dir = schema.startsWith('IoK8sApimachinery') ? machineryDir : modelsDir
    const source = readFileSync(join(dir, '_schemas', `${schema}.js`), 'utf8')
    known = new Set([...source.matchAll(/void 0===data\.([A-Za-z_$][\w$]*)/g)].map(m => m[1]))
    if (known.size === 0) throw new Error(`no fields found in the ${schema} validator`)
    knownFields.set(schema, known)
  }
  return known
}

interface Shape { schema: string, fields?: Record<string, Shape> }
const meta: Shape = { schema: 'IoK8sApimachineryPkgApisMetaV1ObjectMeta' }
const execAction: Shape = { schema: 'IoK8sApiCoreV1ExecAction' }
const probe: Shape = { schema: 'IoK8sApiCoreV1Probe', fields: { exec: execAction, httpGet: { schema: 'IoK8sApiCoreV1HTTPGetAction' } } }
const handler: Shape = { schema: 'IoK8sApiCoreV1LifecycleHandler', fields: { exec: execAction, sleep: { schema: 'IoK8sApiCoreV1SleepAction' } } }
const container: Shape = {
  schema: 'IoK8sApiCoreV1Container',
  fields: {
    env: {
      schema: 'IoK8sApiCoreV1EnvVar',
      fields: {
        valueFrom: {
          schema: 'IoK8sApiCoreV1EnvVarSource',
          fields: { secretKeyRef: { schema: 'IoK8sApiCoreV1SecretKeySelector' }, configMapKeyRef: { schema: 'IoK8sApiCoreV1ConfigMapKeySelector' } }
        }
      }
    },
    ports: { schema: 'IoK8sApiCoreV1ContainerPort' },
    readinessProbe: probe,
    livenessProbe: probe,
    startupProbe: probe,
    lifecycle: { schema: 'IoK8sApiCoreV1Lifecycle', fields: { preStop: handler, postStart: handler } },
    resources: { schema: 'IoK8sApiCoreV1ResourceRequirements' },
    securityContext: { schema: 'IoK8sApiCoreV1SecurityContext', fields: { capabilities: { schema: 'IoK8sApiCoreV1Capabilities' } } },
    volumeMounts: { schema: 'IoK8sApiCoreV1VolumeMount' }
  }
}
const podSpec: Shape = {
  schema: 'IoK8sApiCoreV1PodSpec',
  fields: {
    containers: container,
    initContainers: container,
    securityContext: { schema: 'IoK8sApiCoreV1PodSecurityContext', fields: { seccompProfile: { schema: 'IoK8sApiCoreV1SeccompProfile' } } },
    volumes: {
      schema: 'IoK8sApiCoreV1Volume',
      fields: {
        configMap: { schema: 'IoK8sApiCoreV1ConfigMapVolumeSource', fields: { items: { schema: 'IoK8sApiCoreV1KeyToPath' } } },
        secret: { schema: 'IoK8sApiCoreV1SecretVolumeSource', fields: { items: { schema: 'IoK8sApiCoreV1KeyToPath' } } },
        emptyDir: { schema: 'IoK8sApiCoreV1EmptyDirVolumeSource' }
      }
    }
  }
}
const shapes: Record<string, Shape> = {
  Deployment: {
    schema: 'IoK8sApiAppsV1Deployment',
    fields: {
      metadata: meta,
      spec: {
        schema: 'IoK8sApiAppsV1DeploymentSpec',
        fields: {
          strategy: { schema: 'IoK8sApiAppsV1DeploymentStrategy', fields: { rollingUpdate: { schema: 'IoK8sApiAppsV1RollingUpdateDeployment' } } },
          template: { schema: 'IoK8sApiCoreV1PodTemplateSpec', fields: { metadata: meta, spec: podSpec } }
        }
      }
    }
  },
  ConfigMap: { schema: 'IoK8sApiCoreV1ConfigMap', fields: { metadata: meta } },
  Secret: { schema: 'IoK8sApiCoreV1Secret', fields: { metadata: meta } },
  Service: { schema: 'IoK8sApiCoreV1Service', fields: { metadata: meta } }
}

/** Paths of properties the schema does not declare, e.g. `spec.template.spec.containers[1].readinesProbe`. */
function unknownFields (value: unknown, shape: Shape, path: string): string[] {
  if (Array.isArray(value)) return value.flatMap((v, i) => unknownFields(v, shape, `${path}[${i}]`))
  if (value === null || typeof value !== 'object') return []
  const known = fieldsOf(shape.schema)
  return Object.entries(value).flatMap(([key, v]) => {
    const at = path === '' ? key : `${path}.${key}`
    if (!known.has(key)) return [at]
    const nested = shape.fields?.[key]
    return nested === undefined ? [] : unknownFields(v, nested, at)
  })
}

// ---- helpers -------------------------------------------------------------------------------
const LOOPBACK = (host: string): boolean => host === 'localhost' || host === '::1' || /^127\./.test(host)
/** Addresses a listener on which also answers on 127.0.0.1 (and on the pod IP, for the last two). */
const ANSWERS_ON_LOOPBACK = (host: string): boolean => LOOPBACK(host) || host === '0.0.0.0' || host === '::'

function quantity (q: string | number | undefined): number {
  if (q === undefined) return NaN
  const m = /^([0-9.]+)(Ki|Mi|Gi|k|M|G|m)?$/.exec(String(q))
  if (m === null) return NaN
  const unit = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, k: 1e3, M: 1e6, G: 1e9, m: 1e-3 }[m[2] ?? ''] ?? 1
  return Number(m[1]) * unit
}

function env (c: IContainer): Map<string, IEnvVar> {
  return new Map((c.env ?? []).map(e => [e.name, e]))
}

/** The value a container would see, resolving ConfigMap and Secret references from the manifests. */
function resolve (e: IEnvVar): string | undefined {
  if (e.value !== undefined) return e.value
  const cm = e.valueFrom?.configMapKeyRef
  if (cm != null) return configMaps.find(c => c.metadata?.name === cm.name)?.data?.[cm.key]
  const s = e.valueFrom?.secretKeyRef
  if (s != null) {
    const secret = secrets.find(x => x.metadata?.name === s.name)
    const encoded = secret?.data?.[s.key]
    return secret?.stringData?.[s.key] ?? (encoded === undefined ? undefined : Buffer.from(encoded, 'base64').toString())
  }
  return undefined
}

/** The URL an exec probe fetches: `node -e "fetch('http://…')…"`. */
function execProbeUrl (p: IProbe): URL | undefined {
  const command = p.exec?.command ?? []
  const match = command[0] === 'node' && command[1] === '-e' ? /fetch\(\s*'([^']+)'/.exec(command[2] ?? '') : null
  return match === null ? undefined : new URL(match[1])
}

/** Seconds a preStop hook holds the container before SIGTERM. */
function preStopSeconds (c: IContainer): number {
  const preStop = c.lifecycle?.preStop
  if (preStop == null) return 0
  if (preStop.sleep != null) return preStop.sleep.seconds
  const command = preStop.exec?.command ?? []
  const timeout = /setTimeout\([^,]+,\s*(\d+)\s*\)/.exec(command.join(' '))
  if (timeout !== null) return Number(timeout[1]) / 1000
  const sleep = command[0] === 'sleep' ? Number(command[1]) : NaN
  if (!Number.isNaN(sleep)) return sleep
  throw new Error(`cannot tell how long the preStop hook ${JSON.stringify(command)} takes`)
}

// ---- tests ---------------------------------------------------------------------------------
t.test('every manifest parses and is valid against the Kubernetes schema', async t => {
  t.ok(files.includes('deployment.yaml'), 'deploy/kubernetes/deployment.yaml exists')
  t.equal(deployments.length, 1, 'one Deployment')
  t.ok(configMaps.length >= 1, 'a ConfigMap')
  t.ok(secrets.length >= 1, 'an example Secret')
  for (const { file, obj } of docs) {
    const where = `${file}: ${String(obj.kind)} ${String(obj.metadata?.name ?? '')}`
    switch (obj.kind) {
      case 'Deployment': t.doesNotThrow(() => new Deployment(obj as any).validate(), where); break
      case 'ConfigMap': t.doesNotThrow(() => new ConfigMap(obj as any).validate(), where); break
      case 'Secret': t.doesNotThrow(() => new Secret(obj as any).validate(), where); break
      case 'Service': t.doesNotThrow(() => new Service(obj as any).validate(), where); break
      case 'Kustomization': continue
      default: t.fail(`${where}: no validation for this kind`); continue
    }
    t.same(unknownFields(obj, shapes[obj.kind], ''), [], `${where}: no unknown (misspelled) fields`)
  }
})

t.test('the misspelled-field check catches a misspelling', async t => {
  const copy = structuredClone(ofKind('Deployment')[0].obj)
  const c = copy.spec.template.spec.containers[0]
  c.readinesProbe = c.readinessProbe ?? {}
  copy.spec.template.spec.terminationGracePeriod = 30
  t.same(unknownFields(copy, shapes.Deployment, '').sort(), [
    'spec.template.spec.containers[0].readinesProbe',
    'spec.template.spec.terminationGracePeriod'
  ])
  t.doesNotThrow(() => new Deployment(copy).validate(), 'which kubernetes-models alone lets through')
})

t.test('kustomization lists the manifests to apply, never the example Secret', async t => {
  const kustomization = ofKind('Kustomization')[0]?.obj
  t.ok(kustomization, 'kustomization.yaml exists')
  const resources: string[] = kustomization?.resources ?? []
  for (const r of resources) t.ok(files.includes(r), `${r} exists`)
  t.ok(resources.includes('deployment.yaml'), 'it applies deployment.yaml')
  for (const d of ofKind('Secret')) t.notOk(resources.includes(d.file), `${d.file} (placeholder values) is not applied`)
})

t.test('the pod: app container + metrics-sidecar container wired together', async t => {
  const deployment = deployments[0]
  const spec = deployment.spec?.template.spec
  if (spec === undefined) throw new Error('no pod template spec')
  t.match(deployment.spec?.template.metadata?.labels ?? {}, deployment.spec?.selector.matchLabels ?? {}, 'the selector matches the pod labels')

  const sidecars = spec.containers.filter(c => c.image?.includes('metrics-sidecar') === true)
  t.equal(sidecars.length, 1, 'exactly one container runs an image named metrics-sidecar')
  const sidecar = sidecars[0]
  const apps = spec.containers.filter(c => c !== sidecar)
  t.equal(apps.length, 1, 'and one app container')
  const app = apps[0]

  const sidecarEnv = env(sidecar)
  const variable = (name: string): string | undefined => {
    const e = sidecarEnv.get(name)
    return e === undefined ? undefined : resolve(e)
  }
  const host = variable('HOST') ?? '127.0.0.1'
  const port = Number(variable('PORT') ?? 8186)
  t.ok(Number.isInteger(port) && port > 0, `the sidecar's PORT is a port (${port})`)

  t.test('probes reach the sidecar where it listens', async t => {
    const expected = { readinessProbe: '/ready', livenessProbe: '/health' } as const
    for (const [which, path] of Object.entries(expected) as Array<[keyof typeof expected, string]>) {
      const p = sidecar[which]
      if (p == null) { t.fail(`${which} is set`); continue }
      if (p.httpGet != null) {
        t.equal(p.httpGet.path, path, `${which} httpGet path`)
        t.equal(Number(p.httpGet.port), port, `${which} httpGet port is PORT`)
        // The kubelet connects to the pod IP: a loopback-only listener would never answer.
        t.notOk(LOOPBACK(host), `${which}: an httpGet probe needs a HOST that listens on the pod IP (HOST=${host})`)
        t.notOk(p.httpGet.host, `${which}: httpGet.host would be resolved on the node, not in the pod`)
      } else {
        const url = execProbeUrl(p)
        if (url === undefined) { t.fail(`${which} is an httpGet probe or a node -e fetch(…) exec probe`); continue }
        t.equal(url.pathname, path, `${which} exec probe path`)
        t.equal(Number(url.port), port, `${which} exec probe port is PORT`)
        t.ok(LOOPBACK(url.hostname), `${which} exec probe calls loopback from inside the container`)
        t.ok(ANSWERS_ON_LOOPBACK(host), `${which}: HOST=${host} answers on loopback`)
      }
      t.ok((p.timeoutSeconds ?? 1) >= 2, `${which} gives node time to start (timeoutSeconds ${p.timeoutSeconds ?? 1})`)
    }
  })

  t.test('secrets come from the Secret, settings from the ConfigMap', async t => {
    const mustBeSecret = ['DATABASE_URL', 'INFLUX_TOKEN']
    if (!LOOPBACK(host)) mustBeSecret.push('WRITE_TOKEN', 'QUERY_TOKEN')
    for (const name of mustBeSecret) {
      t.ok(sidecarEnv.get(name)?.valueFrom?.secretKeyRef, `sidecar ${name} is a secretKeyRef`)
    }
    t.ok(env(app).get('DATABASE_URL')?.valueFrom?.secretKeyRef, 'app DATABASE_URL is a secretKeyRef')
    for (const name of ['INFLUX_URL', 'INFLUX_ORG', 'INFLUX_BUCKET']) {
      const e = sidecarEnv.get(name)
      t.ok(e?.valueFrom?.configMapKeyRef ?? e?.value, `sidecar ${name} is set (ConfigMap or value)`)
    }
    for (const c of spec.containers) {
      for (const e of c.env ?? []) {
        if (/TOKEN|PASSWORD|DATABASE_URL/.test(e.name)) t.equal(e.value, undefined, `${c.name} ${e.name} is not written in the manifest`)
        const s = e.valueFrom?.secretKeyRef
        if (s != null) {
          const secret = secrets.find(x => x.metadata?.name === s.name)
          t.ok(secret, `${c.name} ${e.name}: Secret ${s.name} exists`)
          t.ok(secret?.stringData?.[s.key] ?? secret?.data?.[s.key], `${c.name} ${e.name}: Secret ${s.name} has key ${s.key}`)
        }
        const cm = e.valueFrom?.configMapKeyRef
        if (cm != null) {
          const map = configMaps.find(x => x.metadata?.name === cm.name)
          t.ok(map, `${c.name} ${e.name}: ConfigMap ${cm.name} exists`)
          t.ok(map?.data?.[cm.key], `${c.name} ${e.name}: ConfigMap ${cm.name} has key ${cm.key}`)
        }
      }
    }
  })

  t.test('the app calls the sidecar on loopback at its port', async t => {
    const sidecarUrl = env(app).get('SIDECAR_URL')
    t.ok(sidecarUrl?.value, 'the app has SIDECAR_URL')
    const url = new URL(sidecarUrl?.value ?? 'invalid:')
    t.ok(LOOPBACK(url.hostname), `SIDECAR_URL is loopback (${url.href})`)
    t.equal(Number(url.port === '' ? 80 : url.port), port, 'SIDECAR_URL port is the sidecar PORT')
    t.ok(ANSWERS_ON_LOOPBACK(host), 'and the sidecar listens there')
  })

  t.test('volumes: mounts exist, config files come from the ConfigMap', async t => {
    const volumes = new Map((spec.volumes ?? []).map(v => [v.name, v]))
    for (const c of spec.containers) {
      for (const m of c.volumeMounts ?? []) {
        const v = volumes.get(m.name)
        t.ok(v, `${c.name}: volume ${m.name} exists`)
        const cm = v?.configMap
        if (cm != null) {
          const map = configMaps.find(x => x.metadata?.name === cm.name)
          t.ok(map, `volume ${m.name}: ConfigMap ${String(cm.name)} exists`)
          for (const item of cm.items ?? []) t.ok(map?.data?.[item.key], `volume ${m.name}: ConfigMap has ${item.key}`)
        }
      }
    }
  })

  t.test('the sidecar accepts the configuration the manifests give it', async t => {
    const dir = mkdtempSync(join(tmpdir(), 'k8s-config-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const values: Record<string, string> = {}
    for (const [name, e] of sidecarEnv) {
      const value = resolve(e)
      if (value === undefined) { t.fail(`${name} resolves to a value`); continue }
      values[name] = value
    }
    // SIDECAR_CONFIG names a file in a ConfigMap volume: write that file here and point at it.
    if (values.SIDECAR_CONFIG !== undefined) {
      const mount = (sidecar.volumeMounts ?? []).find(m => values.SIDECAR_CONFIG.startsWith(`${m.mountPath}/`))
      const volume = (spec.volumes ?? []).find(v => v.name === mount?.name)
      const relative = posix.relative(mount?.mountPath ?? '/', values.SIDECAR_CONFIG)
      const item = volume?.configMap?.items?.find(i => i.path === relative)
      const text = configMaps.find(x => x.metadata?.name === volume?.configMap?.name)?.data?.[item?.key ?? relative]
      t.ok(text, `SIDECAR_CONFIG ${values.SIDECAR_CONFIG} is a file of a ConfigMap volume`)
      values.SIDECAR_CONFIG = join(dir, 'sidecar.json')
      writeFileSync(values.SIDECAR_CONFIG, text ?? '')
    }
    const config = loadConfig(values)
    t.equal(config.host, host)
    t.equal(config.port, port)
    t.ok(config.influx, 'points go to InfluxDB (INFLUX_URL is set)')
  })

  t.test('shutdown: the grace period covers the preStop delay and the sidecar flush', async t => {
    const grace = spec.terminationGracePeriodSeconds ?? 30
    const hold = preStopSeconds(sidecar)
    // src/server.ts: close-with-grace gives the sidecar 10 s to stop accepting and flush.
    t.ok(grace > hold + 10, `terminationGracePeriodSeconds ${grace} > preStop ${hold} s + 10 s`)
  })

  t.test('resources are set for the sidecar', async t => {
    const requests = sidecar.resources?.requests ?? {}
    const limits = sidecar.resources?.limits ?? {}
    for (const r of ['cpu', 'memory']) t.ok(quantity(requests[r]) > 0, `requests.${r} is set (${String(requests[r])})`)
    t.ok(quantity(limits.memory) > 0, `limits.memory is set (${String(limits.memory)})`)
    t.ok(quantity(requests.memory) <= quantity(limits.memory), 'the memory request is within the limit')
    // SPEC §7: < 150 MB resident under sustained load; the limit must sit above that, not at it.
    t.ok(quantity(limits.memory) > 150e6, 'the memory limit is above the 150 MB the service may use under load')
    t.ok(quantity(requests.memory) >= 64 * 2 ** 20, 'the memory request covers the idle service (~68 MiB RSS)')
  })

  t.test('the sidecar runs unprivileged with a read-only root filesystem', async t => {
    const pod = spec.securityContext ?? {}
    const ctx = sidecar.securityContext ?? {}
    t.equal(ctx.runAsNonRoot ?? pod.runAsNonRoot, true, 'runAsNonRoot')
    const uid = ctx.runAsUser ?? pod.runAsUser
    if (uid !== undefined) t.not(uid, 0, 'runAsUser is not root')
    const imageUser = /^USER\s+(\d+)/m.exec(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'))?.[1]
    t.ok(imageUser, 'the Dockerfile sets a numeric USER (so runAsNonRoot can verify it)')
    if (uid !== undefined && imageUser !== undefined) t.equal(String(uid), imageUser, 'runAsUser is the image USER')
    t.equal(ctx.readOnlyRootFilesystem, true, 'readOnlyRootFilesystem')
    t.equal(ctx.allowPrivilegeEscalation, false, 'allowPrivilegeEscalation: false')
    t.ok(ctx.capabilities?.drop?.includes('ALL'), 'drops all capabilities')
    t.equal(spec.automountServiceAccountToken, false, 'no Kubernetes API token in the pod')
    // With no INFLUX_URL the file sink writes SINK_FILE (the image's default /data/metrics.lp).
    if (!sidecarEnv.has('INFLUX_URL')) {
      const sinkDir = posix.dirname(variable('SINK_FILE') ?? '/data/metrics.lp')
      const writable = (sidecar.volumeMounts ?? []).some(m => m.mountPath === sinkDir && m.readOnly !== true)
      t.ok(writable, `a writable volume is mounted at ${sinkDir} for the file sink`)
    }
  })
})
