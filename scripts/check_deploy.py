"""Checks of the rendered deployment assets that need no cluster (run by scripts/check-deploy).

check_deploy.py RENDER_DIR WORK_DIR

- every object of every render (scripts/render-deploy) against the Kubernetes 1.30 schemas
  (kubernetes-validate, strict), or, for ServiceMonitor, PrometheusRule and ScaledObject, against
  the openAPIV3Schema of their CRDs in k8s/crd-schemas (strict: unknown fields are errors);
- that the objects of one render agree with each other: selectors select the pods, references
  name objects that exist, the namespace is the same everywhere, the quota holds the autoscaler's
  maximum plus the rolling surge, every container has requests and limits within the
  LimitRange, the pods meet the restricted Pod Security profile, the NetworkPolicy's peers are
  the ingress controller and Prometheus, the autoscaling behaviour is the documented one;
- that the Helm chart's alert rules are the kustomize base's;
- and writes WORK_DIR/rules.yaml, WORK_DIR/alerts.test.yaml and WORK_DIR/queries.test.yaml for
  promtool: the alerts' unit tests, and tests that each Prometheus Adapter query returns one
  series per pod and each KEDA query exactly one series.
Exits 1 listing every failure.
"""

import copy
import json
import pathlib
import re
import sys

import jsonschema
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
K8S_VERSION = "1.30.0"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}
CLUSTER_SCOPED = {"Namespace"}
# The HPA behaviour README and the issue tracker document: fast up, slow down.
BEHAVIOR = {
    "scaleUp": {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Percent", "value": 100, "periodSeconds": 60},
            {"type": "Pods", "value": 4, "periodSeconds": 60},
        ],
    },
    "scaleDown": {
        "stabilizationWindowSeconds": 300,
        "selectPolicy": "Max",
        "policies": [{"type": "Percent", "value": 20, "periodSeconds": 60}],
    },
}

failures = []


def fail(where, message):
    failures.append(f"{where}: {message}")


# --- schemas ----------------------------------------------------------------------------------


def strict_schema(node):
    """An OpenAPI v3 structural schema as a JSON schema that rejects unknown fields."""
    if isinstance(node, list):
        return [strict_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: strict_schema(v) for k, v in node.items()}
    if node.get("x-kubernetes-int-or-string") and "type" not in node:
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        node["additionalProperties"] = False
    return node


def load_crd_schemas():
    schemas = {}
    for path in sorted((ROOT / "k8s/crd-schemas").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = strict_schema(version["schema"]["openAPIV3Schema"])
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def validate_schemas(name, objects, crd_schemas):
    for obj in objects:
        where = f"{name} {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        key = (obj.get("apiVersion"), obj.get("kind"))
        if obj.get("kind") in CRD_KINDS:
            schema = crd_schemas.get(key)
            if schema is None:
                fail(where, f"no CRD schema for {key} in k8s/crd-schemas")
                continue
            errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(obj), key=str)
            for error in errors[:5]:
                path = "/".join(str(p) for p in error.absolute_path)
                fail(where, f"CRD schema: {path}: {error.message}")
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            fail(where, f"no Kubernetes {K8S_VERSION} schema for {key}")
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(p) for p in error.absolute_path)
            fail(where, f"Kubernetes {K8S_VERSION} schema: {path}: {error.message}")


# --- quantities -------------------------------------------------------------------------------

SUFFIX = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value):
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    if not match or match.group(2) not in SUFFIX:
        raise ValueError(f"not a quantity: {value!r}")
    return float(match.group(1)) * SUFFIX[match.group(2)]


# --- one render's objects agree with each other ------------------------------------------------


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def one(name, objects, kind):
    found = by_kind(objects, kind)
    if len(found) != 1:
        fail(name, f"expected one {kind}, found {len(found)}")
        return None
    return found[0]


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_resources(pod_spec):
    """The pod's effective requests and limits: the larger of its biggest init container and
    the sum of its containers, per resource."""
    total = {"requests": {}, "limits": {}}
    for kind in ("requests", "limits"):
        for container in pod_spec["containers"]:
            for res, value in container.get("resources", {}).get(kind, {}).items():
                total[kind][res] = total[kind].get(res, 0) + quantity(value)
        for container in pod_spec.get("initContainers", []):
            for res, value in container.get("resources", {}).get(kind, {}).items():
                total[kind][res] = max(total[kind].get(res, 0), quantity(value))
    return total


def check_render(name, objects, helm):
    deployment = one(name, objects, "Deployment")
    if deployment is None:
        return
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    if not selects(deployment["spec"]["selector"]["matchLabels"], pod_labels):
        fail(name, "the Deployment's selector does not select its own pods")
    check_namespace(name, objects, helm)
    check_references(name, objects, deployment, helm)
    check_selectors(name, objects, pod_labels)
    check_pod_security(name, spec)
    check_network_policy(name, objects)
    check_autoscaling(name, objects, deployment)
    check_quota(name, objects, deployment)


def check_namespace(name, objects, helm):
    namespaces = by_kind(objects, "Namespace")
    expected = namespaces[0]["metadata"]["name"] if namespaces else "wick"
    for obj in objects:
        if obj["kind"] in CLUSTER_SCOPED:
            continue
        actual = obj["metadata"].get("namespace")
        # helm template leaves the namespace to `helm install --namespace`.
        if actual != expected and not (helm and actual is None):
            fail(name, f"{obj['kind']}/{obj['metadata']['name']} is in namespace {actual!r}, "
                       f"not {expected!r}")
    for scaled in by_kind(objects, "ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            query = trigger.get("metadata", {}).get("query", "")
            if query and f'namespace="{expected}"' not in query:
                fail(name, f"the KEDA query does not select namespace {expected}: {query}")


def check_references(name, objects, deployment, helm):
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    spec = deployment["spec"]["template"]["spec"]
    for container in spec["containers"] + spec.get("initContainers", []):
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef", {}).get("name")
            if ref and ("ConfigMap", ref) not in names:
                fail(name, f"container {container['name']} reads ConfigMap {ref}, not rendered")
    account = spec.get("serviceAccountName")
    if ("ServiceAccount", account) not in names:
        fail(name, f"ServiceAccount {account} is not rendered")
    if spec.get("automountServiceAccountToken") is not False:
        fail(name, "the pods mount a service account token")
    for account_obj in by_kind(objects, "ServiceAccount"):
        if account_obj.get("automountServiceAccountToken") is not False:
            fail(name, f"ServiceAccount {account_obj['metadata']['name']} mounts its token")
    mounts = {m["name"] for c in spec["containers"] + spec.get("initContainers", [])
              for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for mount in mounts - volumes.keys():
        fail(name, f"volume mount {mount} has no volume")
    for volume in volumes.values():
        claim = volume.get("persistentVolumeClaim", {}).get("claimName")
        # The chart may name an existing claim (model.pvc.existingClaim); kustomize may not.
        if claim and ("PersistentVolumeClaim", claim) not in names and not helm:
            fail(name, f"volume {volume['name']} names claim {claim}, not rendered")
    for ingress in by_kind(objects, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                service = path["backend"]["service"]["name"]
                if ("Service", service) not in names:
                    fail(name, f"Ingress path {path['path']} sends to Service {service}, "
                               "not rendered")
        if not ingress["spec"].get("tls"):
            fail(name, "the Ingress has no TLS")
        exposed = {p["path"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]}
        for private in ("/", "/metrics", "/health", "/ready"):
            if private in exposed:
                fail(name, f"the Ingress exposes {private}")


def check_selectors(name, objects, pod_labels):
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        for obj in by_kind(objects, kind):
            spec = obj["spec"]
            selector = (spec.get("selector", {}) if kind == "Service"
                        else spec.get("selector", spec.get("podSelector", {})).get("matchLabels"))
            if not selects(selector, pod_labels):
                fail(name, f"{kind}/{obj['metadata']['name']} does not select wick's pods")
    services = by_kind(objects, "Service")
    for monitor in by_kind(objects, "ServiceMonitor"):
        selected = [s for s in services
                    if selects(monitor["spec"]["selector"]["matchLabels"],
                               s["metadata"].get("labels", {}))]
        if len(selected) != 1:
            fail(name, f"the ServiceMonitor selects {len(selected)} Services (each pod must be "
                       "scraped once)")
        ports = {p["name"] for s in selected for p in s["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            if endpoint["port"] not in ports:
                fail(name, f"the ServiceMonitor scrapes port {endpoint['port']}, not on the "
                           "Service")


def check_pod_security(name, spec):
    pod_context = spec.get("securityContext", {})
    if pod_context.get("runAsNonRoot") is not True or pod_context.get("runAsUser") != 1001:
        fail(name, "the pod does not run as non-root uid 1001")
    if pod_context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        fail(name, "the pod has no RuntimeDefault seccomp profile")
    if spec.get("enableServiceLinks") is not False:
        fail(name, "service links are on: a Service named wick would set WICK_PORT=tcp://...")
    for container in spec["containers"] + spec.get("initContainers", []):
        where = f"{name} container {container['name']}"
        context = container.get("securityContext", {})
        if context.get("allowPrivilegeEscalation") is not False:
            fail(where, "allows privilege escalation")
        if context.get("readOnlyRootFilesystem") is not True:
            fail(where, "has a writable root file system")
        if context.get("capabilities", {}).get("drop") != ["ALL"]:
            fail(where, "does not drop all capabilities")
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            for res in ("cpu", "memory"):
                if res not in resources.get(kind, {}):
                    fail(where, f"has no {res} {kind[:-1]}")


def check_network_policy(name, objects):
    policies = [p for p in by_kind(objects, "NetworkPolicy") if p["metadata"]["name"] == "wick"]
    if len(policies) != 1:
        fail(name, "expected the NetworkPolicy wick")
        return
    peers = [peer for rule in policies[0]["spec"]["ingress"] for peer in rule.get("from", [])]
    wanted = {"ingress-nginx": "ingress-nginx", "monitoring": "prometheus"}
    found = {}
    for peer in peers:
        namespace = peer.get("namespaceSelector", {}).get("matchLabels", {}) \
            .get("kubernetes.io/metadata.name")
        app = peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
        if namespace is None:
            fail(name, f"NetworkPolicy peer without a namespace: {peer}")
        found[namespace] = app
    if found != wanted:
        fail(name, f"NetworkPolicy peers are {found}, expected {wanted}")


def check_autoscaling(name, objects, deployment):
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    scaled = by_kind(objects, "ScaledObject")
    if len(hpas) + len(scaled) > 1:
        fail(name, "more than one autoscaler for the Deployment")
    for hpa in hpas:
        spec = hpa["spec"]
        if spec["scaleTargetRef"]["name"] != deployment["metadata"]["name"]:
            fail(name, "the HPA scales another Deployment")
        if spec.get("behavior") != BEHAVIOR:
            fail(name, f"HPA behaviour differs from the documented one: {spec.get('behavior')}")
        pods = [m for m in spec["metrics"] if m["type"] == "Pods"]
        if [m["pods"]["metric"]["name"] for m in pods] != ["wick_saturation"] or \
                pods[0]["pods"]["target"]["type"] != "AverageValue":
            fail(name, "the HPA's Pods metric is not wick_saturation with an AverageValue target")
        if "replicas" in deployment["spec"]:
            fail(name, "the Deployment sets replicas although an HPA owns the count")
    for obj in scaled:
        spec = obj["spec"]
        if spec["scaleTargetRef"]["name"] != deployment["metadata"]["name"]:
            fail(name, "the ScaledObject scales another Deployment")
        behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}) \
            .get("behavior")
        if behavior != BEHAVIOR:
            fail(name, f"KEDA behaviour differs from the documented one: {behavior}")


def autoscaler_max(objects):
    for hpa in by_kind(objects, "HorizontalPodAutoscaler"):
        return hpa["spec"]["maxReplicas"]
    for scaled in by_kind(objects, "ScaledObject"):
        return scaled["spec"]["maxReplicaCount"]
    return None


def check_quota(name, objects, deployment):
    quotas = by_kind(objects, "ResourceQuota")
    limit_ranges = by_kind(objects, "LimitRange")
    spec = deployment["spec"]["template"]["spec"]
    if limit_ranges:
        ceilings = {item["type"]: item for item in limit_ranges[0]["spec"]["limits"]}
        container_max = ceilings.get("Container", {}).get("max", {})
        for container in spec["containers"] + spec.get("initContainers", []):
            for res, value in container.get("resources", {}).get("limits", {}).items():
                if res in container_max and quantity(value) > quantity(container_max[res]):
                    fail(name, f"container {container['name']} limit {res}={value} is above the "
                               f"LimitRange's {container_max[res]}")
        claim_max = ceilings.get("PersistentVolumeClaim", {}).get("max", {}).get("storage")
        for claim in by_kind(objects, "PersistentVolumeClaim"):
            size = claim["spec"]["resources"]["requests"]["storage"]
            if claim_max and quantity(size) > quantity(claim_max):
                fail(name, f"claim {claim['metadata']['name']} ({size}) is above the "
                           f"LimitRange's {claim_max}")
    if not quotas:
        return
    hard = quotas[0]["spec"]["hard"]
    replicas = autoscaler_max(objects) or deployment["spec"].get("replicas", 1)
    surge = deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    pods = replicas + surge
    if quantity(hard.get("pods", 0)) < pods:
        fail(name, f"quota pods={hard.get('pods')} < {replicas} replicas + {surge} surge")
    per_pod = pod_resources(spec)
    for kind in ("requests", "limits"):
        for res, value in per_pod[kind].items():
            key = f"{kind}.{res}"
            if key in hard and quantity(hard[key]) < pods * value:
                fail(name, f"quota {key}={hard[key]} < {pods} pods x {value:g}")
            if key not in hard and "." not in res:
                fail(name, f"quota has no {key}")
    node_ports = sum(1 for s in by_kind(objects, "Service") if s["spec"]["type"] == "NodePort")
    if quantity(hard.get("services.nodeports", 0)) < node_ports:
        fail(name, f"quota services.nodeports={hard.get('services.nodeports')} < {node_ports}")
    claims = by_kind(objects, "PersistentVolumeClaim")
    storage = sum(quantity(c["spec"]["resources"]["requests"]["storage"]) for c in claims)
    if claims and quantity(hard.get("requests.storage", 0)) < storage:
        fail(name, f"quota requests.storage={hard.get('requests.storage')} < {storage:g}")


# --- alerts and queries for promtool ------------------------------------------------------------


def rules_of(objects):
    return [o["spec"] for o in by_kind(objects, "PrometheusRule")]


def check_rules_agree(renders):
    helm_file = yaml.safe_load((ROOT / "k8s/helm/wick/files/prometheus-rules.yaml").read_text())
    base = rules_of(renders["kustomize-prod"])
    if base != [helm_file]:
        fail("k8s/helm/wick/files/prometheus-rules.yaml", "differs from k8s/base/prometheusrule.yaml")
    for name, objects in renders.items():
        for spec in rules_of(objects):
            if spec != base[0]:
                fail(name, "its PrometheusRule differs from the base's")
    return base[0]


def check_alert_tests(rules, tests):
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    fired = {case["alertname"] for test in tests["tests"]
             for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    for alert in sorted(alerts - fired):
        fail("k8s/alerts/alerts.test.yaml", f"no test expects {alert} to fire")
    for alert in sorted(fired - alerts):
        fail("k8s/alerts/alerts.test.yaml", f"tests an alert that does not exist: {alert}")


# Two pods of wick in namespace wick (pod a scraped twice, by two jobs), and a pod of another
# namespace that no query may count.
QUERY_SERIES = [
    ('wick_saturation{namespace="wick", service="wick", pod="wick-a", job="wick"}', "1.5x10"),
    ('wick_saturation{namespace="wick", service="wick", pod="wick-a", job="pods"}', "1.5x10"),
    ('wick_saturation{namespace="wick", service="wick", pod="wick-b", job="wick"}', "0.5x10"),
    ('wick_saturation{namespace="other", service="wick", pod="wick-x", job="wick"}', "9x10"),
    ('wick_queue_depth{namespace="wick", service="wick", pod="wick-a", job="wick"}', "7x10"),
    ('wick_queue_depth{namespace="wick", service="wick", pod="wick-b", job="wick"}', "0x10"),
    ('wick_requests_total{namespace="wick", pod="wick-a", route="/predict", code="200"}',
     "0+600x10"),
    ('wick_requests_total{namespace="wick", pod="wick-a", route="/predict", code="429"}',
     "0+60x10"),
    ('wick_requests_total{namespace="wick", pod="wick-a", route="/v1/embeddings", code="200"}',
     "0+540x10"),
    ('wick_requests_total{namespace="wick", pod="wick-a", route="/ready", code="200"}',
     "0+6000x10"),
    ('wick_requests_total{namespace="wick", pod="wick-b", route="/v1/chat/completions", '
     'code="200"}', "0+120x10"),
]
# Per pod, what each adapter metric must be: one series per pod.
ADAPTER_EXPECTED = {
    "wick_saturation": {"wick-a": 1.5, "wick-b": 0.5},
    "wick_queue_depth": {"wick-a": 7, "wick-b": 0},
    # (600 + 60 + 540) per minute; /ready is not an inference route.
    "wick_inference_requests_per_second": {"wick-a": 20, "wick-b": 2},
}


def adapter_query(rule):
    series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"].strip("'")).group(0)
    return (rule["metricsQuery"]
            .replace("<<.Series>>", series)
            .replace("<<.LabelMatchers>>", 'namespace="wick",pod=~"wick-a|wick-b"')
            .replace("<<.GroupBy>>", "pod"))


def query_tests(renders):
    adapter = yaml.safe_load((ROOT / "k8s/autoscaling/prometheus-adapter-values.yaml").read_text())
    cases = []
    exposed = set()
    for rule in adapter["rules"]["custom"]:
        metric = rule["name"]["as"]
        exposed.add(metric)
        if metric not in ADAPTER_EXPECTED:
            fail("prometheus-adapter-values.yaml", f"no expected values for {metric}")
            continue
        cases.append({
            "expr": adapter_query(rule),
            "eval_time": "10m",
            "exp_samples": [{"labels": f'{{pod="{pod}"}}', "value": value}
                            for pod, value in ADAPTER_EXPECTED[metric].items()],
        })
    for name, objects in renders.items():
        for hpa in by_kind(objects, "HorizontalPodAutoscaler"):
            for metric in hpa["spec"]["metrics"]:
                if metric["type"] == "Pods" and metric["pods"]["metric"]["name"] not in exposed:
                    fail(name, f"the HPA reads {metric['pods']['metric']['name']}, which the "
                               "Prometheus Adapter rules do not expose")
        for scaled in by_kind(objects, "ScaledObject"):
            namespace = scaled["metadata"].get("namespace", "wick")
            for trigger in scaled["spec"]["triggers"]:
                if trigger["type"] != "prometheus":
                    continue
                # The fixture's pods live in namespace wick.
                query = trigger["metadata"]["query"].replace(
                    f'namespace="{namespace}"', 'namespace="wick"')
                cases.append({"expr": query, "eval_time": "10m",
                              "exp_samples": [{"labels": "{}", "value": 2.0}]})
    return {
        "evaluation_interval": "1m",
        "tests": [{
            "name": "adapter: one series per pod; KEDA: exactly one series",
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in QUERY_SERIES],
            "promql_expr_test": cases,
        }],
    }


def main():
    render_dir, work_dir = map(pathlib.Path, sys.argv[1:3])
    renders = {p.stem: json.loads(p.read_text()) for p in sorted(render_dir.glob("*.json"))}
    crd_schemas = load_crd_schemas()
    for name, objects in renders.items():
        validate_schemas(name, objects, crd_schemas)
        check_render(name, objects, helm=name.startswith("helm-"))
    rules = check_rules_agree(renders)
    tests = yaml.safe_load((ROOT / "k8s/alerts/alerts.test.yaml").read_text())
    check_alert_tests(rules, tests)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    (work_dir / "alerts.test.yaml").write_text(
        (ROOT / "k8s/alerts/alerts.test.yaml").read_text())
    (work_dir / "queries.test.yaml").write_text(yaml.safe_dump(query_tests(renders),
                                                               sort_keys=False))
    objects = sum(len(o) for o in renders.values())
    if failures:
        print("\n".join(failures), file=sys.stderr)
        print(f"check-deploy: {len(failures)} failures", file=sys.stderr)
        sys.exit(1)
    print(f"{len(renders)} renders, {objects} objects: schemas and cross-references ok")


if __name__ == "__main__":
    main()
