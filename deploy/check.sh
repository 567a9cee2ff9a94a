#!/usr/bin/env bash
# make deploy-check: lint and render the Helm chart in each scenario, validate every manifest against the
# Kubernetes API schemas, and run checkov over them: any lint error, invalid manifest or failed check exits non-zero.
#
#   deploy/check.sh [helm flags...]      e.g. deploy/check.sh --set securityContext.privileged=true (must fail)
#   deploy/check.sh --helm-path          print the pinned helm's path (built first if needed), nothing else
#
# The tools are pinned and kept under $FHIR_SCRIBE_TOOLS (~/.cache/fhir-scribe/tools), made on first use: helm is
# built from the Go module proxy (no helm release download is reachable), checkov and kubernetes-validate each get
# their own virtualenv (checkov pins many packages; the project's .venv must stay `pip check` clean).
# Environment: DEPLOY_CHECK_OUT (where renders go, default build/deploy-check), DEPLOY_CHECK_SCENARIOS (a subset).
set -euo pipefail

HELM_VERSION=v3.22.0
CHECKOV_VERSION=3.3.30
KUBERNETES_VALIDATE_VERSION=1.37.0
KUBERNETES_VERSION=1.30.0
# Custom resources: kubernetes-validate knows the built-in API only, so these kinds (and only these) are not
# schema-validated; checkov still reads them, and tests/deploy/test_chart.py asserts their fields.
SKIP_KINDS="ScaledObject ServiceMonitor"
# default: values.yaml as shipped; the others are files in the chart's ci/ directory.
SCENARIOS=${DEPLOY_CHECK_SCENARIOS:-"default all-on chart-secrets"}

here=$(cd "$(dirname "$0")" && pwd)
chart=$here/helm/fhir-scribe
tools=${FHIR_SCRIBE_TOOLS:-$HOME/.cache/fhir-scribe/tools}
out=${DEPLOY_CHECK_OUT:-$here/../build/deploy-check}
python=${PYTHON:-python3}
go=$(command -v go || echo /usr/local/go/bin/go)
mkdir -p "$tools"

step() { echo "== $*" >&2; }

# One bootstrap at a time (two runs must not build into the same directories).
exec 9>"$tools/.lock"
flock 9

helm=$tools/helm-$HELM_VERSION/helm
if [ ! -x "$helm" ]; then
    [ -x "$go" ] || { echo "deploy-check: Go is needed to build helm (go on PATH or /usr/local/go/bin/go)" >&2; exit 1; }
    step "building helm $HELM_VERSION from the Go module proxy (first time only: a few minutes)"
    start=$SECONDS
    # -modcacherw: the module cache can later be deleted with rm -rf; GOTOOLCHAIN=local: never fetch another Go.
    GOPATH=$tools/go GOMODCACHE=$tools/go/pkg/mod GOCACHE=$tools/go/cache GOBIN=$tools/helm-$HELM_VERSION \
        GOTOOLCHAIN=local GOFLAGS="-mod=mod -modcacherw" "$go" install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    # The build cache (~700 MB) serves no later run; the module cache (~410 MB) stays, for an offline rebuild.
    rm -rf "$tools/go/cache"
    step "helm built in $((SECONDS - start)) s"
fi
if [ "${1:-}" = --helm-path ]; then
    echo "$helm"
    exit 0
fi

# A virtualenv per tool and version; .complete is written only once the install and `pip check` succeeded.
tool_venv() {
    local venv=$tools/$1-$2
    if [ ! -e "$venv/.complete" ]; then
        step "installing $1==$2 into $venv"
        rm -rf "$venv"
        "$python" -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "$1==$2"
        "$venv/bin/pip" check >/dev/null
        touch "$venv/.complete"
    fi
    echo "$venv/bin/$1"
}
checkov=$(tool_venv checkov "$CHECKOV_VERSION")
kubernetes_validate=$(tool_venv kubernetes-validate "$KUBERNETES_VALIDATE_VERSION")
flock -u 9

rm -rf "$out"
mkdir -p "$out"
# Canonical: checkov given a path with ".." in it scans nothing and exits 0 (seen with 3.3.30).
out=$(cd "$out" && pwd -P)
for scenario in $SCENARIOS; do
    values=()
    [ "$scenario" = default ] || values=(-f "$chart/ci/$scenario-values.yaml")
    step "$scenario: helm lint"
    "$helm" lint --strict --quiet "$chart" --namespace fhir-scribe --kube-version "$KUBERNETES_VERSION" \
        "${values[@]}" "$@" >&2
    step "$scenario: helm template"
    # --kube-version also because a helm built by `go install` assumes Kubernetes 1.20 (its release build sets it).
    "$helm" template fhir-scribe "$chart" --namespace fhir-scribe --kube-version "$KUBERNETES_VERSION" \
        "${values[@]}" "$@" --output-dir "$out/$scenario" >/dev/null

    step "$scenario: kubernetes-validate $KUBERNETES_VALIDATE_VERSION against Kubernetes $KUBERNETES_VERSION (strict)"
    for manifest in "$out/$scenario"/*/templates/*.yaml; do
        kinds=$(grep -c '^kind:' "$manifest" || true)
        # One object per template keeps "skip by kind" exact.
        [ "$kinds" = 1 ] || { echo "$manifest: expected one object, found $kinds" >&2; exit 1; }
        kind=$(sed -n 's/^kind: *//p' "$manifest")
        if [[ " $SKIP_KINDS " == *" $kind "* ]]; then
            echo "  skipped (custom resource, no built-in schema): $kind ${manifest#"$out"/}" >&2
            continue
        fi
        "$kubernetes_validate" --strict --quiet --kubernetes-version "$KUBERNETES_VERSION" "$manifest" >&2
        echo "  valid: $kind ${manifest#"$out"/}" >&2
    done
done

skipped=$(grep -oE '^ *- CKV[0-9A-Z_]+' "$chart/checkov.yaml" | tr -d ' -' | xargs)
step "checkov $CHECKOV_VERSION (framework kubernetes) over every rendered manifest; skipped, see checkov.yaml: $skipped"
# --skip-download: nothing is fetched from a vendor platform; the skipped checks and their reasons: checkov.yaml.
# Its summary must show checks run and none failed: an exit code of 0 alone could mean nothing was scanned.
report=$("$checkov" --directory "$out" --framework kubernetes --config-file "$chart/checkov.yaml" \
    --skip-download --compact --quiet) && status=0 || status=$?
echo "$report" >&2
summary=$(grep -E '^Passed checks: [0-9]+, Failed checks: [0-9]+' <<<"$report" || true)
if [ "$status" != 0 ] || ! grep -qE '^Passed checks: [1-9][0-9]*, Failed checks: 0,' <<<"$summary"; then
    echo "deploy-check FAILED: checkov (exit $status): ${summary:-no summary, nothing scanned?}" >&2
    exit 1
fi
step "deploy-check passed: scenarios $SCENARIOS"
