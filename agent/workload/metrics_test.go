package workload

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestParseMetrics(t *testing.T) {
	good, err := ParseMetrics([]byte(`{"iterations": 12, "best_cost": 3.5e3, "x_1": -1}`))
	if err != nil || len(good) != 3 || good["best_cost"] != 3500 {
		t.Fatalf("good file: %v %v", good, err)
	}
	many := make([]string, MaxMetrics+1)
	for i := range many {
		many[i] = fmt.Sprintf(`"m%d": %d`, i, i)
	}
	bad := map[string]string{
		"not json":       `iterations=3`,
		"array":          `[1, 2]`,
		"null":           `null`,
		"string value":   `{"a": "1"}`,
		"nested":         `{"a": {"b": 1}}`,
		"upper case":     `{"Best": 1}`,
		"dash":           `{"best-cost": 1}`,
		"empty name":     `{"": 1}`,
		"long name":      `{"` + strings.Repeat("a", MaxMetricNameLen+1) + `": 1}`,
		"out of range":   `{"a": 1e400}`,
		"too many":       "{" + strings.Join(many, ",") + "}",
		"too big":        `{"a": 1` + strings.Repeat(" ", maxMetricsFileBytes) + `}`,
		"half written":   `{"a": 1, "b"`,
		"trailing stuff": `{"a": 1} {"b": 2}`,
	}
	for name, in := range bad {
		if m, err := ParseMetrics([]byte(in)); !errors.Is(err, ErrBadMetrics) {
			t.Errorf("%s: got %v, %v; want ErrBadMetrics", name, m, err)
		}
	}
}

func FuzzParseMetrics(f *testing.F) {
	f.Add([]byte(`{"iterations": 1, "best_cost": 2}`))
	f.Add([]byte(`{"a": 1e400}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMetrics(b)
		if err != nil {
			return
		}
		if len(m) > MaxMetrics {
			t.Fatalf("%d metrics accepted", len(m))
		}
		for k := range m {
			if !validMetricName(k) {
				t.Fatalf("bad name %q accepted", k)
			}
		}
	})
}

func TestWorkloadMetricsReported(t *testing.T) {
	r := newRunner(t, testConfig(t))
	// The workload publishes atomically, then waits for a go-ahead file
	// before publishing garbage, so the test sees both versions.
	a := sh("metrics.0.1", `
		printf '{"iterations": 7, "best_cost": 1234.5}' > "$COLONY_METRICS_FILE.tmp"
		mv "$COLONY_METRICS_FILE.tmp" "$COLONY_METRICS_FILE"
		while [ ! -e go ]; do sleep 0.05; done
		printf 'garbage' > "$COLONY_METRICS_FILE.tmp"
		mv "$COLONY_METRICS_FILE.tmp" "$COLONY_METRICS_FILE"
		echo done > garbage.written
		exec sleep 1000`)
	reconcile(t, r, a)
	waitFor(t, waitLong, func() error {
		st, err := status(r, a.InstanceID)
		if err == nil && (st.Metrics["iterations"] != 7 || st.Metrics["best_cost"] != 1234.5 || len(st.Metrics) != 2) {
			err = fmt.Errorf("metrics %v", st.Metrics)
		}
		return err
	})
	if err := os.WriteFile(workDir(r, a.InstanceID)+"/go", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitLong, func() error {
		_, err := os.Stat(workDir(r, a.InstanceID) + "/garbage.written")
		return err
	})
	for range 3 { // repeated reads of the same garbage count once
		st, _ := status(r, a.InstanceID)
		if st.MetricsRejected != 1 || st.Metrics["iterations"] != 7 {
			t.Fatalf("after garbage: rejected %d, metrics %v (the last good ones must stay)", st.MetricsRejected, st.Metrics)
		}
	}
}

func TestAntfarmMetricsReachStatus(t *testing.T) {
	r := newRunner(t, testConfig(t))
	a := Assignment{
		InstanceID: "antfarm.0.1",
		Deployment: "antfarm",
		Argv:       []string{os.Args[0], "-test.run=^$", "--", "--jobs", "30", "--report", "50ms"},
		Env:        map[string]string{antfarmEnv: "1"},
		Restart:    RestartPolicy{Mode: RestartNever},
	}
	reconcile(t, r, a)
	waitFor(t, waitLong, func() error {
		st, err := status(r, a.InstanceID)
		if err != nil {
			return err
		}
		if st.State != StateRunning || st.Metrics["iterations"] < 1 || st.Metrics["best_cost"] <= 0 || st.Metrics["jobs"] != 30 {
			return fmt.Errorf("%s, metrics %v", st.State, st.Metrics)
		}
		return nil
	})
	reconcile(t, r) // SIGTERM: antfarm stops cleanly
	st := waitState(t, r, a.InstanceID, StateStopped)
	out, _ := r.Logs(a.InstanceID, Stdout, 0)
	if st.ExitCode != 0 || !strings.Contains(string(out), "done: ") {
		t.Fatalf("antfarm did not stop cleanly (exit %d):\n%s", st.ExitCode, out)
	}
}
