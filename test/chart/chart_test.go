// Package chart tests the Helm chart in charts/streamhouse offline, the way
// CI can without a cluster: `helm lint --strict`, `helm template` with the
// default values and every values file in charts/streamhouse/ci, each
// rendered manifest validated against the Kubernetes 1.30 schemas with
// kubectl-validate (unknown fields rejected; the Prometheus Operator CRDs in
// testdata/crds for ServiceMonitor and PrometheusRule), bad values rejected by
// values.schema.json with a message naming the key, and every flag and
// STREAMHOUSE_* variable the chart passes checked against the real binary's
// --help.
//
// bin/helm and bin/kubectl-validate are built by `go tool task tools` (a
// dependency of `go tool task test`); the tests fail, not skip, without them.
package chart

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"

	"github.com/streamhouse/streamhouse/test/devproc"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) {
		if binDir != "" {
			os.RemoveAll(binDir)
		}
	}))
}

// binDir holds the streamhouse and shctl binaries helpFlags builds; removed
// when the tests end.
var binDir string

// kubeVersion is the Kubernetes version the chart is rendered for
// (.Capabilities) and validated against.
const kubeVersion = "1.30"

// namespace and release are what the tests install as.
const (
	namespace = "streamhouse"
	release   = "sh"
)

// repoRoot is the folder holding go.work.
func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.work above %s", wd)
		}
	}
}

func chartDir(t *testing.T) string { return filepath.Join(repoRoot(t), "charts", "streamhouse") }

// tool returns bin/<name>, failing the test if it is missing.
func tool(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(repoRoot(t), "bin", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s: %v (build it with: go tool task tools)", name, err)
	}
	return p
}

// run runs a tool with a private HOME-like environment (helm keeps caches
// and repository lists there; kubectl-validate must not find a kubeconfig:
// everything is offline) and returns stdout and, on failure, an error that
// carries stderr.
func run(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(),
		"HOME="+home,
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+filepath.Join(home, "no-kubeconfig"),
		"NO_COLOR=1",
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\nstdout:\n%s\nstderr:\n%s",
			filepath.Base(bin), strings.Join(args, " "), err, tail(stdout.String(), 3000), stderr.String())
	}
	return stdout.String(), nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// render runs helm template on chart with the values files.
func render(t *testing.T, chart string, values ...string) (string, error) {
	t.Helper()
	args := []string{"template", release, chart, "--namespace", namespace, "--kube-version", kubeVersion + ".0"}
	for _, v := range values {
		args = append(args, "--values", v)
	}
	return run(t, tool(t, "helm"), args...)
}

// validate checks manifests with kubectl-validate against the Kubernetes
// schemas (and the CRDs in testdata/crds); unknown fields are errors.
func validate(t *testing.T, manifests string) error {
	t.Helper()
	f := filepath.Join(t.TempDir(), "rendered.yaml")
	if err := os.WriteFile(f, []byte(manifests), 0o644); err != nil {
		t.Fatal(err)
	}
	crds, err := filepath.Abs(filepath.Join("testdata", "crds"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = run(t, tool(t, "kubectl-validate"), "--version", kubeVersion, "--local-crds", crds, f)
	return err
}

// object is one rendered manifest.
type object map[string]any

func (o object) kind() string { return str(o["kind"]) }
func (o object) name() string { return str(get(o, "metadata", "name")) }

// parse splits a helm template output into its objects.
func parse(t *testing.T, manifests string) []object {
	t.Helper()
	var out []object
	dec := yaml.NewDecoder(strings.NewReader(manifests))
	for {
		var o object
		err := dec.Decode(&o)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("parse rendered YAML: %v", err)
		}
		if o != nil {
			out = append(out, o)
		}
	}
}

// get walks maps by key (yaml decodes the maps inside an object as
// objects too).
func get(v any, path ...string) any {
	for _, k := range path {
		m, ok := v.(object)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

func list(v any) []any { l, _ := v.([]any); return l }

// find returns the objects of a kind.
func find(objs []object, kind string) []object {
	var out []object
	for _, o := range objs {
		if o.kind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// one returns the object of kind whose name ends with suffix.
func one(t *testing.T, objs []object, kind, suffix string) object {
	t.Helper()
	for _, o := range find(objs, kind) {
		if strings.HasSuffix(o.name(), suffix) {
			return o
		}
	}
	t.Fatalf("no %s named *%s rendered", kind, suffix)
	return nil
}

// valuesCases are the default values plus every ci/*-values.yaml.
func valuesCases(t *testing.T) map[string][]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir(t), "ci", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 4 {
		t.Fatalf("expected the minimal, production, external-s3 and monitoring values files in ci/, found %v", files)
	}
	cases := map[string][]string{"default": nil}
	for _, f := range files {
		cases[strings.TrimSuffix(filepath.Base(f), ".yaml")] = []string{f}
	}
	return cases
}

func TestLint(t *testing.T) {
	for name, values := range valuesCases(t) {
		t.Run(name, func(t *testing.T) {
			args := []string{"lint", "--strict", chartDir(t)}
			for _, v := range values {
				args = append(args, "--values", v)
			}
			out, err := run(t, tool(t, "helm"), args...)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, "0 chart(s) failed") {
				t.Fatalf("helm lint: %s", out)
			}
		})
	}
}

// TestRenderAndValidate renders every values case, validates it offline and
// checks what an operator relies on.
func TestRenderAndValidate(t *testing.T) {
	appVersion := chartAppVersion(t)
	alerts, _ := filepath.Glob(filepath.Join(chartDir(t), "files", "alerts", "*.y*ml"))
	dashboards, _ := filepath.Glob(filepath.Join(chartDir(t), "files", "dashboards", "*.json"))
	for name, values := range valuesCases(t) {
		t.Run(name, func(t *testing.T) {
			out, err := render(t, chartDir(t), values...)
			if err != nil {
				t.Fatal(err)
			}
			if err := validate(t, out); err != nil {
				t.Fatalf("rendered manifests fail validation:\n%v", err)
			}
			objs := parse(t, out)
			checkWorkloads(t, objs, appVersion)
			kinds := map[string]int{}
			seen := map[string]bool{}
			for _, o := range objs {
				kinds[o.kind()]++
				id := o.kind() + "/" + str(get(o, "metadata", "namespace")) + "/" + o.name()
				if seen[id] || o.name() == "" || len(o.name()) > 63 {
					t.Errorf("%s: name empty, too long or rendered twice", id)
				}
				seen[id] = true
			}
			want := map[string]int{"StatefulSet": 2, "Deployment": 1, "Service": 4}
			switch name {
			case "production-values":
				want["HorizontalPodAutoscaler"] = 1
				want["Ingress"] = 1
				want["NetworkPolicy"] = 3
				want["Secret"] = 0
				want["PodDisruptionBudget"] = 3
				agent := one(t, objs, "StatefulSet", "-agent")
				if ref := secretRefs(agent); len(ref) != 0 {
					t.Errorf("agent S3 keys come from %v, want none (workload identity)", ref)
				}
				if v := envValue(agent, "STREAMHOUSE_S3_CREDENTIALS"); v != "iam" {
					t.Errorf("agent STREAMHOUSE_S3_CREDENTIALS = %q, want iam (workload identity)", v)
				}
			case "minimal-values":
				want["Secret"] = 1
				want["PodDisruptionBudget"] = 0
			case "external-s3-values":
				want["Secret"] = 0
				agent := one(t, objs, "StatefulSet", "-agent")
				if ref := secretRefs(agent); !slices.Equal(ref, []string{"s3-keys/AWS_ACCESS_KEY_ID", "s3-keys/AWS_SECRET_ACCESS_KEY"}) {
					t.Errorf("agent S3 keys come from %v, want the existing secret s3-keys", ref)
				}
				sa := one(t, objs, "ServiceAccount", "")
				if str(get(sa, "metadata", "annotations", "eks.amazonaws.com/role-arn")) == "" {
					t.Error("workload identity annotation missing from the ServiceAccount")
				}
			case "monitoring-values":
				want["ServiceMonitor"] = 1
				want["PrometheusRule"] = min(len(alerts), 1)
				want["ConfigMap"] = len(dashboards)
			case "default":
				want["PodDisruptionBudget"] = 3
				want["Secret"] = 0
				want["ServiceMonitor"] = 0
				want["PrometheusRule"] = 0
				want["ConfigMap"] = 0
				want["NetworkPolicy"] = 0
			}
			for k, n := range want {
				if kinds[k] != n {
					t.Errorf("%d %s rendered, want %d (all: %v)", kinds[k], k, n, kinds)
				}
			}
		})
	}
}

func chartAppVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir(t), "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		AppVersion string `yaml:"appVersion"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil || c.AppVersion == "" {
		t.Fatalf("Chart.yaml appVersion: %q, %v", c.AppVersion, err)
	}
	return c.AppVersion
}

func secretRefs(o object) []string {
	var out []string
	for _, c := range list(get(o, "spec", "template", "spec", "containers")) {
		for _, e := range list(get(c, "env")) {
			if ref := get(e, "valueFrom", "secretKeyRef"); ref != nil {
				out = append(out, str(get(ref, "name"))+"/"+str(get(ref, "key")))
			}
		}
	}
	sort.Strings(out)
	return out
}

// envValue returns the literal value of the environment variable name in
// o's containers, or "".
func envValue(o object, name string) string {
	for _, c := range list(get(o, "spec", "template", "spec", "containers")) {
		for _, e := range list(get(c, "env")) {
			if str(get(e, "name")) == name {
				return str(get(e, "value"))
			}
		}
	}
	return ""
}

// checkWorkloads checks the properties every values case must keep: the
// chart's image, hardened pods, probes that mean what they say, and an agent
// grace period longer than its shutdown timeout.
func checkWorkloads(t *testing.T, objs []object, appVersion string) {
	t.Helper()
	for _, o := range append(find(objs, "StatefulSet"), find(objs, "Deployment")...) {
		pod := get(o, "spec", "template", "spec")
		if get(pod, "securityContext", "runAsNonRoot") != true || str(get(pod, "securityContext", "seccompProfile", "type")) != "RuntimeDefault" {
			t.Errorf("%s: pod securityContext %v", o.name(), get(pod, "securityContext"))
		}
		for _, c := range list(get(pod, "containers")) {
			sc := get(c, "securityContext")
			if get(sc, "readOnlyRootFilesystem") != true || get(sc, "allowPrivilegeEscalation") != false ||
				!slices.Equal(list(get(sc, "capabilities", "drop")), []any{"ALL"}) {
				t.Errorf("%s: container securityContext %v", o.name(), sc)
			}
			if img := str(get(c, "image")); img != "ghcr.io/streamhouse/streamhouse:"+appVersion {
				t.Errorf("%s: image %s, want the chart's appVersion %s", o.name(), img, appVersion)
			}
			if get(c, "resources", "requests") == nil {
				t.Errorf("%s: no resource requests", o.name())
			}
		}
	}
	ctl := one(t, objs, "StatefulSet", "-controller")
	c := list(get(ctl, "spec", "template", "spec", "containers"))[0]
	if p := str(get(c, "readinessProbe", "httpGet", "path")); p != "/readyz" {
		t.Errorf("controller readiness path %q, want /readyz (200 only when a leader is known)", p)
	}
	if p := str(get(ctl, "spec", "podManagementPolicy")); p != "Parallel" {
		t.Errorf("controller podManagementPolicy %q: with OrderedReady controller-0 waits forever for a leader", p)
	}
	if len(list(get(ctl, "spec", "volumeClaimTemplates"))) != 1 {
		t.Error("controller has no PVC for its Raft data")
	}
	for _, s := range find(objs, "Service") {
		if get(s, "spec", "clusterIP") == "None" && get(s, "spec", "publishNotReadyAddresses") != true {
			t.Errorf("headless service %s must publish not-ready pods (voters resolve each other before a leader exists)", s.name())
		}
	}

	agent := one(t, objs, "StatefulSet", "-agent")
	grace, _ := get(agent, "spec", "template", "spec", "terminationGracePeriodSeconds").(int)
	ac := list(get(agent, "spec", "template", "spec", "containers"))[0]
	var shutdown string
	for _, a := range list(get(ac, "args")) {
		if v, ok := strings.CutPrefix(str(a), "--shutdown-timeout="); ok {
			shutdown = v
		}
	}
	d, err := parseDuration(shutdown)
	if err != nil {
		t.Fatalf("agent --shutdown-timeout=%q: %v", shutdown, err)
	}
	if float64(grace) <= d {
		t.Errorf("agent terminationGracePeriodSeconds %d <= --shutdown-timeout %s: Kubernetes would kill it mid-upload", grace, shutdown)
	}
	if len(list(get(agent, "spec", "volumeClaimTemplates"))) != 1 {
		t.Error("agent has no PVC for its WAL")
	}
	if !slices.ContainsFunc(list(get(ac, "env")), func(e any) bool { return str(get(e, "name")) == "STREAMHOUSE_ZONE" }) {
		t.Error("agent gets no STREAMHOUSE_ZONE")
	}
	for _, pdb := range find(objs, "PodDisruptionBudget") {
		if get(pdb, "spec", "maxUnavailable") != 1 {
			t.Errorf("%s: maxUnavailable %v, want 1", pdb.name(), get(pdb, "spec", "maxUnavailable"))
		}
	}
}

// parseDuration is time.ParseDuration in seconds, kept separate so a
// chart value the Go parser rejects fails here too.
func parseDuration(s string) (float64, error) {
	cmd := regexp.MustCompile(`^([0-9.]+)(ms|s|m|h)`)
	total := 0.0
	for s != "" {
		m := cmd.FindStringSubmatch(s)
		if m == nil {
			return 0, fmt.Errorf("not a duration: %q", s)
		}
		var n float64
		if _, err := fmt.Sscan(m[1], &n); err != nil {
			return 0, err
		}
		total += n * map[string]float64{"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m[2]]
		s = s[len(m[0]):]
	}
	return total, nil
}

// TestValidationCatchesTypos proves the offline validation would catch a
// misspelt field: in the chart's own templates, in a ServiceMonitor (a CRD),
// and in a free-form value passed through to the pod spec.
func TestValidationCatchesTypos(t *testing.T) {
	out, err := render(t, chartDir(t), filepath.Join(chartDir(t), "ci", "monitoring-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ from, to, want string }{
		{"readinessProbe:", "readynessProbe:", "readynessProbe: Invalid value: value provided for unknown field"},
		{"terminationGracePeriodSeconds:", "terminationGracePeriodSecond:", "terminationGracePeriodSecond: Invalid value: value provided for unknown field"},
		{"scrapeTimeout:", "scrapeTimout:", "scrapeTimout: Invalid value: value provided for unknown field"},
		{"replicas: 3", "replicas: three", "spec.replicas in body must be of type integer"},
	} {
		t.Run(tc.to, func(t *testing.T) {
			if !strings.Contains(out, tc.from) {
				t.Fatalf("rendered chart has no %q", tc.from)
			}
			err := validate(t, strings.Replace(out, tc.from, tc.to, 1))
			if err == nil {
				t.Fatalf("kubectl-validate accepted %q", tc.to)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("kubectl-validate error does not mention %q:\n%v", tc.want, err)
			}
		})
	}
	t.Run("values passthrough", func(t *testing.T) {
		out, err := render(t, chartDir(t), filepath.Join("testdata", "typo-lifecycle-values.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		err = validate(t, out)
		if err == nil || !strings.Contains(err.Error(), "lifecycle.preStopp: Invalid value: value provided for unknown field") {
			t.Fatalf("want the misspelt agent.lifecycle.preStopp caught, got %v", err)
		}
	})
}

// TestSchemaRejectsBadValues runs each testdata/bad/*.yaml (its first lines
// "# want: <text>" name what the error must say) through helm template.
func TestSchemaRejectsBadValues(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "bad", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad values files: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".yaml"), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var wants []string
			for _, line := range strings.Split(string(b), "\n") {
				if w, ok := strings.CutPrefix(line, "# want: "); ok {
					wants = append(wants, w)
				}
			}
			if len(wants) == 0 {
				t.Fatalf("%s has no '# want: ' line", f)
			}
			_, err = render(t, chartDir(t), f)
			if err == nil {
				t.Fatalf("helm template accepted %s", f)
			}
			for _, w := range wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
		})
	}
}

// helpFlags builds the real binaries once and reads the flags each command
// documents in --help.
var helpFlags = sync.OnceValues(func() (map[string]map[string]bool, error) {
	dir, err := os.MkdirTemp("", "chart-flags-")
	if err != nil {
		return nil, err
	}
	binDir = dir
	bin, err := devproc.Build(dir)
	if err != nil {
		return nil, err
	}
	shctl := filepath.Join(dir, "shctl")
	if out, err := exec.Command("go", "build", "-o", shctl, "github.com/streamhouse/streamhouse/controller/cmd/shctl").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build shctl: %v\n%s", err, out)
	}
	flagRE := regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9][a-z0-9-]*)`)
	out := map[string]map[string]bool{}
	for name, argv := range map[string][]string{
		"controller": {bin, "controller", "--help"},
		"agent":      {bin, "agent", "--help"},
		"gateway":    {bin, "gateway", "--help"},
		"shctl":      {shctl, "--help"},
	} {
		b, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("%v: %v\n%s", argv, err, b)
		}
		out[name] = map[string]bool{}
		for _, m := range flagRE.FindAllStringSubmatch(string(b), -1) {
			out[name][m[1]] = true
		}
		if len(out[name]) < 3 {
			return nil, fmt.Errorf("%v: found only %v flags in:\n%s", argv, out[name], b)
		}
	}
	return out, nil
})

// TestFlagsExist renders every values case and checks that each --flag the
// chart passes, and each STREAMHOUSE_* variable it sets, is one the binary
// really has: a renamed or removed flag fails here, not in a crash-looping
// pod.
func TestFlagsExist(t *testing.T) {
	flags, err := helpFlags()
	if err != nil {
		t.Fatal(err)
	}
	for name, values := range valuesCases(t) {
		t.Run(name, func(t *testing.T) {
			out, err := render(t, chartDir(t), values...)
			if err != nil {
				t.Fatal(err)
			}
			problems, checked := flagProblems(parse(t, out), flags)
			for _, p := range problems {
				t.Error(p)
			}
			if checked < 30 {
				t.Fatalf("only %d flags and variables checked", checked)
			}
		})
	}
	// `helm test` runs shctl commands: they must exist too.
	t.Run("helm test pod", func(t *testing.T) {
		out, err := render(t, chartDir(t))
		if err != nil {
			t.Fatal(err)
		}
		pods := find(parse(t, out), "Pod")
		if len(pods) != 1 {
			t.Fatalf("%d test pods rendered, want 1", len(pods))
		}
		for _, c := range list(get(pods[0], "spec", "containers")) {
			if cmd := list(get(c, "command")); len(cmd) != 1 || cmd[0] != "/usr/local/bin/shctl" {
				t.Fatalf("test container runs %v, want shctl", cmd)
			}
			args := []string{}
			for _, a := range list(get(c, "args")) {
				args = append(args, str(a))
			}
			// A parent command answers --help for an unknown child too, so
			// check the usage names the whole command.
			b, err := exec.Command(filepath.Join(binDir, "shctl"), append(args, "--help")...).CombinedOutput()
			if err != nil || !strings.Contains(string(b), "\n  shctl "+strings.Join(args, " ")) {
				t.Errorf("shctl %v is not a command: %v\n%s", args, err, b)
			}
		}
	})
	// The check itself: a flag and a variable the binary does not have.
	t.Run("drift is caught", func(t *testing.T) {
		out, err := render(t, chartDir(t), filepath.Join("testdata", "drift-values.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		problems, _ := flagProblems(parse(t, out), flags)
		got := strings.Join(problems, "\n")
		for _, want := range []string{"streamhouse agent has no --no-such-flag", "STREAMHOUSE_NO_SUCH_SETTING sets no flag"} {
			if !strings.Contains(got, want) {
				t.Errorf("drift not reported: want %q in:\n%s", want, got)
			}
		}
	})
}

// flagProblems lists each container argument that is not a --flag of its
// subcommand and each STREAMHOUSE_* variable that names no flag of it (or of
// shctl, whose defaults the chart sets in every pod); checked counts what
// was looked at.
func flagProblems(objs []object, flags map[string]map[string]bool) (problems []string, checked int) {
	argRE := regexp.MustCompile(`^--([a-z0-9][a-z0-9-]*)(=|$)`)
	for _, o := range append(find(objs, "StatefulSet"), find(objs, "Deployment")...) {
		for _, c := range list(get(o, "spec", "template", "spec", "containers")) {
			args := list(get(c, "args"))
			if len(args) == 0 {
				problems = append(problems, o.name()+": no args")
				continue
			}
			sub := str(args[0])
			known, ok := flags[sub]
			if !ok {
				problems = append(problems, fmt.Sprintf("%s: subcommand %q is not controller, agent or gateway", o.name(), sub))
				continue
			}
			for _, a := range args[1:] {
				m := argRE.FindStringSubmatch(str(a))
				switch {
				case m == nil:
					problems = append(problems, fmt.Sprintf("%s: argument %q is not --flag=value", o.name(), a))
				case !known[m[1]]:
					problems = append(problems, fmt.Sprintf("%s: streamhouse %s has no --%s (see streamhouse %s --help)", o.name(), sub, m[1], sub))
				}
				checked++
			}
			for _, e := range list(get(c, "env")) {
				env, ok := strings.CutPrefix(str(get(e, "name")), "STREAMHOUSE_")
				if !ok {
					continue
				}
				flag := strings.ReplaceAll(strings.ToLower(env), "_", "-")
				if !known[flag] && !flags["shctl"][flag] {
					problems = append(problems, fmt.Sprintf("%s: STREAMHOUSE_%s sets no flag of streamhouse %s or shctl", o.name(), env, sub))
				}
				checked++
			}
		}
	}
	return problems, checked
}

// TestMonitoringFilesTemplated proves the PrometheusRule and dashboard
// templates on a copy of the chart whose files/ holds known fixtures (and
// nothing at all): the rule groups come through unchanged, each dashboard
// becomes a labelled ConfigMap, and no files render nothing.
func TestMonitoringFilesTemplated(t *testing.T) {
	monitoring := filepath.Join(chartDir(t), "ci", "monitoring-values.yaml")
	t.Run("fixtures", func(t *testing.T) {
		chart := copyChart(t, filepath.Join("testdata", "monitoring-files"))
		out, err := render(t, chart, monitoring)
		if err != nil {
			t.Fatal(err)
		}
		if err := validate(t, out); err != nil {
			t.Fatal(err)
		}
		objs := parse(t, out)
		rule := one(t, objs, "PrometheusRule", "")
		var fixture struct {
			Groups []any `yaml:"groups"`
		}
		b, err := os.ReadFile(filepath.Join("testdata", "monitoring-files", "alerts", "fixture.rules.yml"))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, &fixture); err != nil {
			t.Fatal(err)
		}
		got, _ := yaml.Marshal(get(rule, "spec", "groups"))
		want, _ := yaml.Marshal(fixture.Groups)
		if !bytes.Equal(got, want) {
			t.Errorf("PrometheusRule groups differ from the rule file:\n got: %s\nwant: %s", got, want)
		}
		if !strings.Contains(string(got), "{{ $labels.partition }}") {
			t.Error("alert templates ({{ $labels.x }}) must pass through helm untouched")
		}
		if l := str(get(rule, "metadata", "labels", "release")); l != "kube-prometheus-stack" {
			t.Errorf("PrometheusRule release label %q", l)
		}
		cms := find(objs, "ConfigMap")
		if len(cms) != 1 {
			t.Fatalf("%d ConfigMaps, want 1 dashboard", len(cms))
		}
		cm := cms[0]
		if str(get(cm, "metadata", "labels", "grafana_dashboard")) != "1" {
			t.Errorf("dashboard ConfigMap labels %v", get(cm, "metadata", "labels"))
		}
		data := str(get(cm, "data", "fixture-board.json"))
		if !strings.Contains(data, `"title": "Fixture board"`) {
			t.Errorf("dashboard ConfigMap data: %v", get(cm, "data"))
		}
	})
	t.Run("no files", func(t *testing.T) {
		chart := copyChart(t, "")
		out, err := render(t, chart, monitoring)
		if err != nil {
			t.Fatal(err)
		}
		objs := parse(t, out)
		if n := len(find(objs, "PrometheusRule")) + len(find(objs, "ConfigMap")); n != 0 {
			t.Errorf("%d PrometheusRule/ConfigMap rendered without files", n)
		}
		if len(find(objs, "ServiceMonitor")) != 1 {
			t.Error("ServiceMonitor missing")
		}
	})
	t.Run("bad rule file", func(t *testing.T) {
		chart := copyChart(t, "")
		if err := os.MkdirAll(filepath.Join(chart, "files", "alerts"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(chart, "files", "alerts", "x.yml"), []byte("rules: []\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := render(t, chart, monitoring)
		if err == nil || !strings.Contains(err.Error(), "files/alerts/x.yml has no top-level groups list") {
			t.Fatalf("want a clear error for a rule file without groups, got %v", err)
		}
	})
}

// copyChart copies the chart to a temp folder with files/ replaced by the
// contents of files ("" for none).
func copyChart(t *testing.T, files string) string {
	t.Helper()
	src := chartDir(t)
	dst := filepath.Join(t.TempDir(), "streamhouse")
	copyTree := func(from, to string, skip string) {
		err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(from, p)
			if skip != "" && (rel == skip || strings.HasPrefix(rel, skip+string(filepath.Separator))) {
				return nil
			}
			target := filepath.Join(to, rel)
			if d.IsDir() {
				return os.MkdirAll(target, 0o755)
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, b, 0o644)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	copyTree(src, dst, "files")
	if files != "" {
		copyTree(files, filepath.Join(dst, "files"), "")
	}
	return dst
}
