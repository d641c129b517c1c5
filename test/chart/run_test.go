package chart

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/streamhouse/streamhouse/pkg/objstore/s3test"
	"github.com/streamhouse/streamhouse/test/devproc"
)

// TestRenderedCommandsRun runs the chart's own commands as real processes:
// the args and environment of the rendered controller, agent and gateway
// (one of each), with only what a cluster provides swapped for local
// stand-ins (the pods' DNS names and ports for free 127.0.0.1 ports, the
// volumes for temp folders, the Secret and the downward API resolved as the
// kubelet would), against a real S3 server. The probes the chart declares
// must answer 200, a durable produce must reach the object store through the
// settings the chart passes, and the agent must shut down cleanly on SIGTERM
// within the grace period the chart gives it.
func TestRenderedCommandsRun(t *testing.T) {
	if _, err := helpFlags(); err != nil { // builds binDir/streamhouse
		t.Fatal(err)
	}
	s3 := s3test.StartServer(t)
	out, err := render(t, chartDir(t), filepath.Join(chartDir(t), "ci", "minimal-values.yaml"),
		writeValues(t, fmt.Sprintf(`
objectStore:
  endpoint: %s
  bucket: %s
  region: %s
  tls: false
  createBucket: false
  keyRoot: chart-test
  prefixCount: 4
  credentials:
    source: secret
    accessKey: %s
    secretKey: %s
zone:
  value: ""
agent:
  shutdownTimeout: 20s
`, s3.Config.Endpoint, s3.Config.Bucket, s3.Config.Region, s3.Config.AccessKey, s3.Config.SecretKey)))
	if err != nil {
		t.Fatal(err)
	}
	objs := parse(t, out)
	secrets := map[string]map[string]string{}
	for _, s := range find(objs, "Secret") {
		secrets[s.name()] = map[string]string{}
		data, _ := get(s, "data").(object)
		for k, v := range data {
			b, err := base64.StdEncoding.DecodeString(str(v))
			if err != nil {
				t.Fatal(err)
			}
			secrets[s.name()][k] = string(b)
		}
	}

	// Every port the chart uses, per component, on a free local port.
	ports := map[string]map[string]string{
		"controller": {"7000": devproc.FreeAddr(t), "7001": devproc.FreeAddr(t), "7946": devproc.FreeAddr(t)},
		"agent":      {"7101": devproc.FreeAddr(t), "7946": devproc.FreeAddr(t)},
		"gateway":    {"8080": devproc.FreeAddr(t), "7946": devproc.FreeAddr(t)},
	}
	data := t.TempDir()
	type pod struct {
		component string
		obj       object
		args      []string
		probes    map[string]string // probe kind: URL
	}
	pods := map[string]*pod{}
	for _, o := range append(find(objs, "StatefulSet"), find(objs, "Deployment")...) {
		spec := get(o, "spec", "template", "spec")
		c := list(get(spec, "containers"))[0]
		component := str(get(o, "metadata", "labels", "app.kubernetes.io/component"))
		podName := o.name() + "-0"
		env := map[string]string{}
		for _, e := range list(get(c, "env")) {
			env[str(get(e, "name"))] = resolveEnv(t, e, podName, secrets)
		}
		expand := func(s string) string {
			return regexp.MustCompile(`\$\(([A-Z_]+)\)`).ReplaceAllStringFunc(s, func(m string) string {
				return env[m[2:len(m)-1]]
			})
		}
		p := &pod{component: component, obj: o, probes: map[string]string{}}
		for _, a := range list(get(c, "args")) {
			p.args = append(p.args, localize(t, expand(str(a)), ports, component, data))
		}
		// The binaries read only STREAMHOUSE_* (and OTEL_*) variables, and
		// each is set by one component or to the same value everywhere, so
		// the test's environment can carry them all.
		for k, v := range env {
			if strings.HasPrefix(k, "STREAMHOUSE_") {
				t.Setenv(k, v)
			}
		}
		for _, kind := range []string{"readinessProbe", "livenessProbe", "startupProbe"} {
			h := get(c, kind, "httpGet")
			if h == nil {
				continue
			}
			var port string
			for _, cp := range list(get(c, "ports")) {
				if str(get(cp, "name")) == str(get(h, "port")) {
					port = str(get(cp, "containerPort"))
				}
			}
			p.probes[kind] = "http://" + ports[component][port] + str(get(h, "path"))
		}
		if len(p.probes) < 2 {
			t.Fatalf("%s: probes %v", o.name(), p.probes)
		}
		pods[component] = p
	}

	bin := filepath.Join(binDir, "streamhouse")
	start := func(p *pod) *devproc.Proc {
		t.Helper()
		proc := devproc.StartCmd(t, bin, p.args[0], p.args[1:]...)
		for kind, url := range p.probes {
			waitOK(t, url, fmt.Sprintf("%s %s", p.component, kind))
		}
		return proc
	}
	start(pods["controller"]) // readiness is /readyz: a leader is known
	agent := start(pods["agent"])
	gw := start(pods["gateway"])

	// A durable produce through the gateway: acked only once the object is
	// in the S3 bucket (the endpoint, keys, key root the chart passes) and
	// committed by the controller.
	call(t, gw.URL, "AdminService/CreateTopic", `{"name":"chart","partitions":1}`, time.Minute)
	call(t, gw.URL, "ProduceService/Produce", `{"topic":"chart","partition":0,"records":[{"value":"aGVsbG8="}]}`, time.Minute)
	got := call(t, gw.URL, "ConsumeService/Fetch", `{"topic":"chart","partition":0,"offset":0}`, time.Minute)
	if !strings.Contains(got, "aGVsbG8=") {
		t.Fatalf("fetch after produce: %s", got)
	}
	var objects []string
	_ = filepath.WalkDir(filepath.Join(s3.Dir, s3.Config.Bucket, "chart-test"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			objects = append(objects, p)
		}
		return nil
	})
	if len(objects) == 0 {
		t.Fatal("no object under the key root chart-test in the bucket")
	}

	// SIGTERM: the agent uploads, commits and releases its leases within
	// the grace period Kubernetes would give it.
	grace, _ := get(pods["agent"].obj, "spec", "template", "spec", "terminationGracePeriodSeconds").(int)
	began := time.Now()
	agent.Terminate()
	agent.WaitExit()
	took := time.Since(began)
	if code := agent.ExitCode(); code != 0 {
		t.Fatalf("agent exited %d after SIGTERM:\n%s", code, agent.Stderr())
	}
	if took >= time.Duration(grace)*time.Second {
		t.Fatalf("agent took %v to stop, beyond terminationGracePeriodSeconds %d", took, grace)
	}
	t.Logf("%d objects in the bucket; agent stopped cleanly in %v (grace %ds)", len(objects), took.Round(time.Millisecond), grace)
}

// writeValues writes a values file for helm.
func writeValues(t *testing.T, yaml string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(f, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// resolveEnv gives an env entry the value the kubelet would.
func resolveEnv(t *testing.T, e any, podName string, secrets map[string]map[string]string) string {
	t.Helper()
	if v, ok := get(e, "value").(string); ok {
		return v
	}
	if f := get(e, "valueFrom", "fieldRef", "fieldPath"); f != nil {
		switch p := str(f); {
		case p == "metadata.name":
			return podName
		case p == "metadata.namespace":
			return namespace
		case p == "status.podIP":
			return "127.0.0.1"
		case strings.HasPrefix(p, "metadata.labels["):
			return "" // no such label on a local "pod", as on a node without zone labels
		default:
			t.Fatalf("env %v: fieldPath %s not simulated", get(e, "name"), p)
		}
	}
	if r := get(e, "valueFrom", "secretKeyRef"); r != nil {
		v, ok := secrets[str(get(r, "name"))][str(get(r, "key"))]
		if !ok {
			t.Fatalf("env %v: secret %v key %v not rendered", get(e, "name"), get(r, "name"), get(r, "key"))
		}
		return v
	}
	t.Fatalf("env %v: no value", get(e, "name"))
	return ""
}

var hostPortRE = regexp.MustCompile(`([A-Za-z0-9._-]*):(7000|7001|7101|7946|8080)\b`)

// localize maps a rendered argument onto this machine: host:port of a
// controller pod to that controller's local port, any other host:port (the
// pod's own listen or advertise address) to the component's own, and the
// volume mount to a temp folder.
func localize(t *testing.T, arg string, ports map[string]map[string]string, component, data string) string {
	t.Helper()
	arg = strings.ReplaceAll(arg, "/var/lib/streamhouse", data)
	return hostPortRE.ReplaceAllStringFunc(arg, func(m string) string {
		sub := hostPortRE.FindStringSubmatch(m)
		owner := component
		if regexp.MustCompile(`-controller-\d+\.`).MatchString(sub[1]) {
			owner = "controller"
		}
		addr, ok := ports[owner][sub[2]]
		if !ok {
			t.Fatalf("argument %q: no local port for %s port %s", arg, owner, sub[2])
		}
		return addr
	})
}

// waitOK polls url until it answers 200.
func waitOK(t *testing.T, url, what string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Sprintf("%s %s", resp.Status, b)
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
	}
	t.Fatalf("%s (%s) not 200 within a minute: %s", what, url, last)
}

// call POSTs a Connect JSON request, retrying while the cluster is still
// settling (leases being granted), and returns the answer.
func call(t *testing.T, base, method, body string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Post(base+"/streamhouse.v1."+method, "application/json", bytes.NewBufferString(body))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return string(b)
			}
			last = fmt.Sprintf("%s %s", resp.Status, b)
			if resp.StatusCode != http.StatusServiceUnavailable && !strings.Contains(last, "unavailable") && !strings.Contains(last, "not_found") {
				t.Fatalf("%s: %s", method, last)
			}
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond) // polling interval, not synchronisation
	}
	t.Fatalf("%s did not succeed within %v: %s", method, within, last)
	return ""
}
