package placement

import (
	"strings"
	"testing"
)

func TestOperators(t *testing.T) {
	n := &Node{
		ID:   "n1",
		Name: "host-1",
		Attributes: map[string]string{
			AttrOS: "linux", AttrArch: "amd64", AttrAgentVersion: "1.4.2", AttrKernel: "6.1.0-18-amd64",
			"weird.version": "not-a-version", "zone": "attr-zone",
		},
		Labels:   map[string]string{"zone": "eu-1", "rack": "r12", "gpu": "", "count": "7", "tier": "web"},
		Capacity: Resources{CPUMillis: 8000, MemoryMiB: 16384},
	}
	tests := []struct {
		attr, op, val string
		vals          []string
		want          bool
	}{
		{"os", "=", "linux", nil, true},
		{"os", "==", "linux", nil, true},
		{"os", "=", "windows", nil, false},
		{"os", "!=", "windows", nil, true},
		{"os", "!=", "linux", nil, false},
		{"label.missing", "=", "x", nil, false},
		{"label.missing", "!=", "x", nil, true},
		{"label.gpu", "=", "", nil, true}, // present and empty
		{"cpu.cores", ">=", "8", nil, true},
		{"cpu.cores", ">", "8", nil, false},
		{"cpu.cores", "<", "8.5", nil, true},
		{"cpu.cores", "<=", "7.99", nil, false},
		{"cpu.millis", "=", "8000", nil, true},
		{"memory.mib", ">", "16000", nil, true},
		{"label.count", "<", "10", nil, true}, // numeric, not lexical ("7" > "10")
		{"label.count", ">", "10", nil, false},
		{"os", "<", "5", nil, false}, // non-numeric node value never matches
		{"os", ">=", "5", nil, false},
		{"label.missing", "<", "5", nil, false},
		{"label.zone", "in", "", []string{"eu-1", "eu-2"}, true},
		{"label.zone", "in", "", []string{"us-1"}, false},
		{"label.zone", "not_in", "", []string{"us-1"}, true},
		{"label.zone", "not_in", "", []string{"eu-1"}, false},
		{"label.missing", "in", "", []string{"x"}, false},
		{"label.missing", "not_in", "", []string{"x"}, true},
		{"label.gpu", "exists", "", nil, true},
		{"label.missing", "exists", "", nil, false},
		{"label.missing", "not_exists", "", nil, true},
		{"label.gpu", "not_exists", "", nil, false},
		{"kernel", "regexp", `^6\.`, nil, true},
		{"kernel", "regexp", "amd64", nil, true}, // unanchored, like Nomad
		{"kernel", "regexp", `^5\.`, nil, false},
		{"label.missing", "regexp", ".*", nil, false},
		{"agent.version", "version", ">= 1.2, < 2.0", nil, true},
		{"agent.version", "version", "~> 1.4", nil, true},
		{"agent.version", "version", ">= 1.5", nil, false},
		{"agent.version", "version", "= 1.4.2", nil, true},
		{"weird.version", "version", ">= 0", nil, false}, // unparsable node value
		{"os", "version", ">= 0", nil, false},
		{"label.missing", "version", ">= 0", nil, false},
		{"node.id", "=", "n1", nil, true},
		{"node.name", "regexp", "^host-", nil, true},
		// Namespace: attributes shadow labels for plain names, label.<key> always reads the label,
		// and a plain name that is not an attribute falls back to a label.
		{"zone", "=", "attr-zone", nil, true},
		{"label.zone", "=", "eu-1", nil, true},
		{"rack", "=", "r12", nil, true},
		{"tier", "in", "", []string{"web", "api"}, true},
	}
	for _, tt := range tests {
		c := Constraint{Attribute: tt.attr, Operator: tt.op, Value: tt.val, Values: tt.vals}
		cc, errs := compileConstraint(c)
		if len(errs) > 0 {
			t.Errorf("%s: does not compile: %v", c, errs)
			continue
		}
		// Twice: the second call hits the memo.
		for i := 0; i < 2; i++ {
			if got := cc.match(n); got != tt.want {
				t.Errorf("%s on node (call %d) = %v, want %v", c, i, got, tt.want)
			}
		}
	}
}

func TestConstraintValidation(t *testing.T) {
	tests := []struct {
		c    Constraint
		want string // "" = valid
	}{
		{Constraint{Attribute: "os", Operator: "=", Value: ""}, ""},
		{Constraint{Attribute: "os", Operator: "like", Value: "x"}, `operator: unknown operator "like"`},
		{Constraint{Attribute: "os", Operator: "", Value: "x"}, `operator: unknown operator ""`},
		{Constraint{Attribute: "cpu.cores", Operator: ">", Value: "four"}, `value: "four" is not a number`},
		{Constraint{Attribute: "cpu.cores", Operator: "<=", Value: "NaN"}, `is not a number`},
		{Constraint{Attribute: "cpu.cores", Operator: "<", Value: "4", Values: []string{"5"}}, "values: operator < takes one value"},
		{Constraint{Attribute: "x", Operator: "regexp", Value: "a(b"}, "value: bad regexp"},
		{Constraint{Attribute: "x", Operator: "regexp", Value: ""}, "value: regexp must not be empty"},
		{Constraint{Attribute: "x", Operator: "version", Value: ">= banana"}, "is not a version constraint"},
		{Constraint{Attribute: "x", Operator: "version", Value: ""}, "is not a version constraint"},
		{Constraint{Attribute: "x", Operator: "in"}, "values: operator in needs at least one value"},
		{Constraint{Attribute: "x", Operator: "not_in", Value: "a,b"}, "value: operator not_in takes a list in values"},
		{Constraint{Attribute: "x", Operator: "exists", Value: "y"}, "value: operator exists takes no value"},
		{Constraint{Attribute: "x", Operator: "not_exists", Values: []string{"y"}}, "value: operator not_exists takes no value"},
		{Constraint{Attribute: "", Operator: "exists"}, "attribute: required"},
		{Constraint{Attribute: "label.", Operator: "exists"}, "attribute: \"label.\" must be"},
		{Constraint{Attribute: "a b", Operator: "exists"}, "attribute: \"a b\" must be"},
		{Constraint{Attribute: "label", Operator: "exists"}, "needs a key"},
	}
	for _, tt := range tests {
		_, errs := compileConstraint(tt.c)
		got := ""
		if len(errs) > 0 {
			got = errs[0].String()
		}
		switch {
		case tt.want == "" && got != "":
			t.Errorf("%s: unexpected error %q", tt.c, got)
		case tt.want != "" && !containsAny(errs, tt.want):
			t.Errorf("%s: errors %v, want one containing %q", tt.c, errs, tt.want)
		}
	}
}

func containsAny(errs []FieldError, s string) bool {
	for _, e := range errs {
		if strings.Contains(e.String(), s) {
			return true
		}
	}
	return false
}

func TestConstraintString(t *testing.T) {
	for c, want := range map[*Constraint]string{
		{Attribute: "os", Operator: "=", Value: "linux"}:                      "os = linux",
		{Attribute: "label.zone", Operator: "in", Values: []string{"a", "b"}}: "label.zone in [a,b]",
		{Attribute: "label.gpu", Operator: "exists"}:                          "label.gpu exists",
	} {
		if got := c.String(); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
	}
}
