package placement

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestParseSpecExample(t *testing.T) {
	data, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := ParseSpec(data)
	if err != nil {
		t.Fatalf("example: %v", err)
	}
	if s.Name != "web" || s.Count != 3 || len(s.Constraints) != 5 || !s.DistinctHosts || s.Spread == nil {
		t.Fatalf("example parsed wrong: %+v", s)
	}
	if got := s.Ask(); got != (Resources{CPUMillis: 250, MemoryMiB: 128}) {
		t.Errorf("ask = %+v", got)
	}
	if s.Restart.RestartMode() != RestartOnFailure || s.Restart.InitialBackoff().String() != "1s" || s.Restart.MaxBackoff().String() != "30s" {
		t.Errorf("restart = %+v", s.Restart)
	}
	if s.Constraints[3].Value != "1024" {
		t.Errorf("numeric YAML value should be kept as text, got %q", s.Constraints[3].Value)
	}

	// The JSON form the FSM stores parses back to the same spec, tabs and all.
	js, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	s2, err := ParseSpec(js)
	if err != nil {
		t.Fatalf("json round trip: %v\n%s", err, js)
	}
	if !reflect.DeepEqual(s, s2) {
		t.Fatalf("json round trip differs:\n%+v\n%+v", s, s2)
	}
}

func TestParseSpecListsEveryError(t *testing.T) {
	in := `
name: Web_1
count: 100001
command:
  driver: docker
  argv: []
  working_dir: relative
resources:
  cpu: -1
  memory: 12 parsecs
constraints:
  - {attribute: os, operator: "~=", value: linux}
  - {attribute: cpu.cores, operator: ">", value: many}
  - {attribute: label.zone, operator: regexp, value: "(["}
  - {attribute: agent.version, operator: version, value: "newest"}
  - {attribute: label.zone, operator: in}
  - {attribute: "", operator: exists, value: x}
preferences:
  - {attribute: label.disk, operator: "=", value: ssd, weight: 0}
  - {attribute: label.disk, operator: "=", value: ssd, weight: 101}
spread: {attribute: label.zone, weight: -5}
restart:
  mode: sometimes
  max_restarts: -1
  backoff: {initial: 10s, max: soon}
`
	_, err := ParseSpec([]byte(in))
	var ve *ValidationError
	if !errors.As(err, &ve) || !errors.Is(err, ErrInvalidSpec) {
		t.Fatalf("want *ValidationError, got %v", err)
	}
	want := []string{
		`name: "Web_1" must be`,
		`count: 100001 is out of range 0..100000`,
		`command.driver: unknown driver "docker"`,
		`command.argv: must not be empty`,
		`command.working_dir: "relative" must be an absolute path`,
		`resources.cpu: "-1"`,
		`resources.memory: "12 parsecs": unknown unit`,
		`constraints[0].operator: unknown operator "~="`,
		`constraints[1].value: "many" is not a number`,
		`constraints[2].value: bad regexp`,
		`constraints[3].value: "newest" is not a version constraint`,
		`constraints[4].values: operator in needs at least one value`,
		`constraints[5].attribute: required`,
		`constraints[5].value: operator exists takes no value`,
		`preferences[0].weight: 0: must be -100..100 and not 0`,
		`preferences[1].weight: 101`,
		`spread.weight: -5`,
		`restart.mode: unknown mode "sometimes"`,
		`restart.max_restarts: -1 must be >= 0`,
		`restart.backoff.max: "soon" is not a duration`,
	}
	msg := err.Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("missing %q in\n%s", w, strings.ReplaceAll(msg, "; ", "\n"))
		}
	}
	if len(ve.Errors) != len(want) {
		t.Errorf("got %d errors, want %d:\n%s", len(ve.Errors), len(want), strings.ReplaceAll(msg, "; ", "\n"))
	}
}

func TestParseSpecStructure(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
	}{
		{"empty", "", []string{"empty spec"}},
		{"comment only", "# nothing\n", []string{"empty spec"}},
		{"list", "- a\n- b\n", []string{"must be a mapping"}},
		{"scalar", "hello", []string{"must be a mapping"}},
		{"syntax", "name: [unclosed\n", []string{"did not find expected"}},
		{"required", "distinct_hosts: true\n", []string{"name: required", "count: required", "command: required"}},
		{"unknown field", "name: a\ncount: 1\ncommand: {argv: [x]}\nreplicas: 3\n", []string{`line 4: unknown field "replicas"`}},
		{"unknown nested", "name: a\ncount: 1\ncommand: {argv: [x], args: [y]}\n", []string{`line 3: unknown field "args"`}},
		{"wrong type", "name: a\ncount: three\ncommand: {argv: [x]}\n", []string{"line 2: wrong type"}},
		{"two docs", "name: a\ncount: 1\ncommand: {argv: [x]}\n---\nname: b\n", []string{"more than one YAML document"}},
		{"json unknown", `{"name": "a", "count": 1, "command": {"argv": ["x"]}, "cout": 2}`, []string{`unknown field "cout"`}},
		{"in with value", "name: a\ncount: 1\ncommand: {argv: [x]}\nconstraints: [{attribute: zone, operator: in, value: a}]\n",
			[]string{"constraints[0].value: operator in takes a list in values", "constraints[0].values: operator in needs at least one value"}},
		{"never with restarts", "name: a\ncount: 1\ncommand: {argv: [x]}\nrestart: {mode: never, max_restarts: 2}\n", []string{"restart.max_restarts: must be 0 when mode is never"}},
		{"backoff order", "name: a\ncount: 1\ncommand: {argv: [x]}\nrestart: {backoff: {initial: 2m}}\n", []string{"restart.backoff: initial 2m0s is longer than max 1m0s"}},
		{"env", "name: a\ncount: 1\ncommand: {argv: [x], env: {\"A=B\": c}}\n", []string{`command.env["A=B"]`}},
		{"bare label prefix", "name: a\ncount: 1\ncommand: {argv: [x]}\nspread: {attribute: label}\n", []string{"spread.attribute"}},
		{"empty program", "name: a\ncount: 1\ncommand: {argv: [\"\"]}\n", []string{"command.argv[0]: program must not be empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseSpec([]byte(tt.in))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("missing %q in %v", w, err)
				}
			}
		})
	}
}

func TestParseSpecMinimalAndJSON(t *testing.T) {
	for _, in := range []string{
		"name: a\ncount: 0\ncommand: {argv: [/bin/true]}\n",
		`{"name":"a","count":2,"command":{"argv":["/bin/true"]},"resources":{"cpu":0.5,"memory":"1GiB"}}`,
		"{\n\t\"name\": \"a\",\n\t\"count\": 2,\n\t\"command\": {\"argv\": [\"/bin/true\"]}\n}",
	} {
		s, err := ParseSpec([]byte(in))
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if err := s.Validate(); err != nil {
			t.Errorf("parsed spec does not validate: %v", err)
		}
	}
}

func TestParseCPU(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"", 0, true}, {"0", 0, true}, {"500m", 500, true}, {"0.5", 500, true}, {"2", 2000, true},
		{"1.5", 1500, true}, {"0.0001", 1, true}, {" 250m ", 250, true}, {"1e1", 10000, true},
		{"-1", 0, false}, {"-5m", 0, false}, {"1.5m", 0, false}, {"abc", 0, false}, {"NaN", 0, false},
		{"Inf", 0, false}, {"1e30", 0, false}, {"m", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseCPU(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseCPU(%q) = %d, %v; want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestParseMemory(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"", 0, true}, {"512", 512, true}, {"512MiB", 512, true}, {"512Mi", 512, true}, {"1GiB", 1024, true},
		{"1gib", 1024, true}, {"1.5GiB", 1536, true}, {"1Gi", 1024, true}, {"1TiB", 1 << 20, true},
		{"2048KiB", 2, true}, {"1KiB", 1, true}, {"1G", 954, true}, {"1GB", 954, true}, {"100MB", 96, true},
		{"1048576B", 1, true}, {"512 MiB", 512, true}, {"0.5", 1, true},
		{"-1", 0, false}, {"1PiB", 0, false}, {"MiB", 0, false}, {"1.2.3MiB", 0, false}, {"NaN", 0, false},
		{"1e30", 0, false}, {"ten", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseMemory(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseMemory(%q) = %d, %v; want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestInstanceID(t *testing.T) {
	if got := InstanceID("web-2", 17, 3); got != "web-2.17.3" {
		t.Fatalf("InstanceID = %q", got)
	}
}

func FuzzParseSpec(f *testing.F) {
	if data, err := os.ReadFile("testdata/example.yaml"); err == nil {
		f.Add(data)
	}
	for _, s := range []string{
		"", "{}", "[]", "null", "name: a\ncount: 1\ncommand: {argv: [x]}\n",
		`{"name":"a","count":1,"command":{"argv":["x"]},"constraints":[{"attribute":"a","operator":"regexp","value":"(a"}]}`,
		"name: a\ncount: 1\ncommand: {argv: [x]}\nresources: {cpu: 1e400, memory: 1e400GiB}\n",
		"name: &a a\ncount: *a\ncommand: *a\n",
		"constraints: [{operator: version, value: '~> 1.2.3-beta'}]\n",
		"spread: {attribute: \x00}\n",
		"restart: {backoff: {initial: -1s}}\n",
		"{\t\"name\":\t\"a\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSpec(data)
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Errors) == 0 {
				t.Fatalf("error is not a non-empty *ValidationError: %#v", err)
			}
			_ = err.Error()
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("ParseSpec accepted a spec Validate refuses: %v", err)
		}
		js, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseSpec(js); err != nil {
			t.Fatalf("JSON of an accepted spec is refused: %v\n%s", err, js)
		}
		// The engine must take any valid spec.
		Plan(Input{Nodes: []Node{{ID: "n", Capacity: Resources{CPUMillis: 1000, MemoryMiB: 1024}}}, Deployments: []*Spec{s}})
	})
}
