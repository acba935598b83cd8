package placement

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Spec limits. They bound what one spec can make the leader do or store.
const (
	MaxCount       = 100000 // instances per deployment
	MaxNameLen     = 63     // like a DNS label
	MaxArgs        = 256
	MaxArgLen      = 4096
	MaxEnv         = 256
	MaxConstraints = 64 // constraints, and separately preferences
	MaxValues      = 256
	MaxAttrLen     = 128
	MaxValueLen    = 1024
	MaxWeight      = 100
	maxSpecBytes   = 1 << 20
)

// Restart modes.
const (
	RestartAlways    = "always"
	RestartOnFailure = "on-failure"
	RestartNever     = "never"
)

// Restart backoff defaults, used when the spec leaves them empty.
const (
	DefaultBackoffInitial = time.Second
	DefaultBackoffMax     = time.Minute
)

// DriverExec is the only driver so far: run argv as a child process.
const DriverExec = "exec"

// Spec is a deployment: what to run, how many, with which resources, and on
// which nodes. Quantities and durations stay as the text the operator wrote
// (so errors can name the field and the stored JSON round-trips); Validate
// checks them and the accessor methods return parsed values.
type Spec struct {
	Name          string       `yaml:"name" json:"name"`
	Count         int          `yaml:"count" json:"count"`
	Command       Command      `yaml:"command" json:"command"`
	Resources     ResourceAsk  `yaml:"resources" json:"resources"`
	Constraints   []Constraint `yaml:"constraints,omitempty" json:"constraints,omitempty"`
	Preferences   []Preference `yaml:"preferences,omitempty" json:"preferences,omitempty"`
	Spread        *Spread      `yaml:"spread,omitempty" json:"spread,omitempty"`
	DistinctHosts bool         `yaml:"distinct_hosts,omitempty" json:"distinct_hosts,omitempty"`
	Restart       Restart      `yaml:"restart,omitempty" json:"restart,omitempty"`
}

// Command is what an instance runs (exec driver).
type Command struct {
	Driver     string            `yaml:"driver,omitempty" json:"driver,omitempty"` // "" or "exec"
	Argv       []string          `yaml:"argv" json:"argv"`
	Env        map[string]string `yaml:"env,omitempty" json:"env,omitempty"`
	WorkingDir string            `yaml:"working_dir,omitempty" json:"working_dir,omitempty"`
}

// ResourceAsk is what one instance reserves on its node. CPU is cores as a
// decimal number ("0.5", 2) or millicores with an m suffix ("500m"); memory
// is MiB as a plain number (512) or a number with a unit ("512MiB", "1.5GiB",
// "1G"). Empty means zero: nothing is reserved.
type ResourceAsk struct {
	CPU    string `yaml:"cpu,omitempty" json:"cpu,omitempty"`
	Memory string `yaml:"memory,omitempty" json:"memory,omitempty"`
}

// Constraint is a hard requirement on a node attribute. Value is used by
// every operator but in, not_in, exists and not_exists; Values by in and
// not_in.
type Constraint struct {
	Attribute string   `yaml:"attribute" json:"attribute"`
	Operator  string   `yaml:"operator" json:"operator"`
	Value     string   `yaml:"value,omitempty" json:"value,omitempty"`
	Values    []string `yaml:"values,omitempty" json:"values,omitempty"`
}

// String is the constraint as it appears in failure metrics, e.g.
// "label.zone in [eu-1,eu-2]".
func (c Constraint) String() string {
	switch c.Operator {
	case OpExists, OpNotExists:
		return c.Attribute + " " + c.Operator
	case OpIn, OpNotIn:
		return c.Attribute + " " + c.Operator + " [" + strings.Join(c.Values, ",") + "]"
	}
	return c.Attribute + " " + c.Operator + " " + c.Value
}

// Preference is a soft constraint: a node that matches gets Weight/100 added
// to its score (negative weights repel). Weight is -100..100, not 0.
type Preference struct {
	Constraint `yaml:",inline"`
	Weight     int `yaml:"weight" json:"weight"`
}

// Spread asks for instances to be spread evenly over the values of an
// attribute (e.g. label.zone). Weight is 1..100; 0 means 100.
type Spread struct {
	Attribute string `yaml:"attribute" json:"attribute"`
	Weight    int    `yaml:"weight,omitempty" json:"weight,omitempty"`
}

// Restart is the restart policy the agent applies to an instance's process.
type Restart struct {
	Mode        string  `yaml:"mode,omitempty" json:"mode,omitempty"`                 // always | on-failure (default) | never
	MaxRestarts int     `yaml:"max_restarts,omitempty" json:"max_restarts,omitempty"` // 0: unlimited
	Backoff     Backoff `yaml:"backoff,omitempty" json:"backoff,omitempty"`
}

// Backoff bounds the exponential delay between restarts (Go durations).
type Backoff struct {
	Initial string `yaml:"initial,omitempty" json:"initial,omitempty"` // default 1s
	Max     string `yaml:"max,omitempty" json:"max,omitempty"`         // default 1m
}

// ErrInvalidSpec is matched (errors.Is) by every *ValidationError.
var ErrInvalidSpec = errors.New("invalid deployment spec")

// FieldError is one problem in a spec: the field path (e.g.
// "constraints[2].operator", or "line 7" for a YAML-level error) and why.
type FieldError struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// String renders the error as "field: reason".
func (e FieldError) String() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

// ValidationError lists every problem found in a spec, in document order.
type ValidationError struct {
	Errors []FieldError `json:"errors"`
}

// Error lists every problem on one line, separated by "; ".
func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString(ErrInvalidSpec.Error())
	if len(e.Errors) == 1 {
		b.WriteString(": ")
	} else {
		fmt.Fprintf(&b, " (%d errors): ", len(e.Errors))
	}
	for i, fe := range e.Errors {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(fe.String())
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrInvalidSpec) true.
func (e *ValidationError) Unwrap() error { return ErrInvalidSpec }

type errList []FieldError

func (l *errList) add(field, format string, args ...any) {
	*l = append(*l, FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
}

func (l errList) err() error {
	if len(l) == 0 {
		return nil
	}
	return &ValidationError{Errors: l}
}

// ParseSpec decodes a spec from YAML or JSON (JSON is YAML), refuses unknown
// fields and missing required ones, then validates it. Every problem found is
// listed in the returned *ValidationError.
func ParseSpec(data []byte) (*Spec, error) {
	var errs errList
	if len(data) > maxSpecBytes {
		errs.add("", "spec is %d bytes, more than the %d allowed", len(data), maxSpecBytes)
		return nil, errs.err()
	}
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		// Valid JSON holds tabs only as whitespace (never raw inside
		// strings), and YAML is pickier about tabs than JSON.
		data = bytes.ReplaceAll(data, []byte{'\t'}, []byte{' '})
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		errs.add("", "%s", strings.TrimPrefix(err.Error(), "yaml: "))
		return nil, errs.err()
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		errs.add("", "empty spec")
		return nil, errs.err()
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		errs.add("", "spec must be a mapping (name: ..., count: ...), not a %s", kindName(root.Kind))
		return nil, errs.err()
	}
	for _, key := range []string{"name", "count", "command"} {
		if !hasKey(root, key) {
			errs.add(key, "required")
		}
	}

	var s Spec
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&s); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			errs.add("", "%s", strings.TrimPrefix(err.Error(), "yaml: "))
			return nil, errs.err()
		}
		for _, m := range te.Errors {
			errs = append(errs, yamlFieldError(m))
		}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		errs.add("", "more than one YAML document: put one deployment per file")
	}
	errs = append(errs, s.validate()...)
	if err := errs.err(); err != nil {
		return nil, err
	}
	return &s, nil
}

func hasKey(m *yaml.Node, key string) bool {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return true
		}
	}
	return false
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "scalar"
	case yaml.AliasNode:
		return "alias"
	}
	return "document"
}

var (
	yamlLineRe    = regexp.MustCompile(`^line (\d+): (.*)$`)
	yamlUnknownRe = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
)

// yamlFieldError turns yaml.v3's "line 3: field foo not found in type
// placement.Spec" into {line 3, unknown field "foo"}.
func yamlFieldError(m string) FieldError {
	fe := FieldError{Reason: m}
	if sm := yamlLineRe.FindStringSubmatch(m); sm != nil {
		fe.Field, fe.Reason = "line "+sm[1], sm[2]
	}
	if sm := yamlUnknownRe.FindStringSubmatch(fe.Reason); sm != nil {
		fe.Reason = fmt.Sprintf("unknown field %q", sm[1])
	} else {
		fe.Reason = strings.Replace(fe.Reason, "cannot unmarshal", "wrong type: cannot decode", 1)
	}
	return fe
}

// Validate checks the spec and returns a *ValidationError listing every
// problem (field path and reason), or nil.
func (s *Spec) Validate() error {
	return s.validate().err()
}

var nameRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// ValidateName reports whether name is an acceptable deployment name: a DNS
// label (1-63 lowercase letters, digits and '-', starting and ending with a
// letter or digit).
func ValidateName(name string) error {
	if name == "" {
		return errors.New("required")
	}
	if len(name) > MaxNameLen || !nameRe.MatchString(name) {
		return fmt.Errorf("%q must be 1-%d lowercase letters, digits or '-', starting and ending with a letter or digit", name, MaxNameLen)
	}
	return nil
}

func (s *Spec) validate() errList {
	var errs errList
	if err := ValidateName(s.Name); err != nil {
		errs.add("name", "%s", err.Error())
	}
	if s.Count < 0 || s.Count > MaxCount {
		errs.add("count", "%d is out of range 0..%d", s.Count, MaxCount)
	}
	s.Command.validate(&errs)
	if _, err := ParseCPU(s.Resources.CPU); err != nil {
		errs.add("resources.cpu", "%s", err.Error())
	}
	if _, err := ParseMemory(s.Resources.Memory); err != nil {
		errs.add("resources.memory", "%s", err.Error())
	}
	if len(s.Constraints) > MaxConstraints {
		errs.add("constraints", "%d constraints, at most %d are allowed", len(s.Constraints), MaxConstraints)
	}
	for i, c := range s.Constraints {
		_, ce := compileConstraint(c)
		for _, fe := range ce {
			errs.add(fmt.Sprintf("constraints[%d].%s", i, fe.Field), "%s", fe.Reason)
		}
	}
	if len(s.Preferences) > MaxConstraints {
		errs.add("preferences", "%d preferences, at most %d are allowed", len(s.Preferences), MaxConstraints)
	}
	for i, p := range s.Preferences {
		_, ce := compileConstraint(p.Constraint)
		for _, fe := range ce {
			errs.add(fmt.Sprintf("preferences[%d].%s", i, fe.Field), "%s", fe.Reason)
		}
		if p.Weight == 0 || p.Weight < -MaxWeight || p.Weight > MaxWeight {
			errs.add(fmt.Sprintf("preferences[%d].weight", i), "%d: must be -%d..%d and not 0", p.Weight, MaxWeight, MaxWeight)
		}
	}
	if s.Spread != nil {
		if err := validateAttribute(s.Spread.Attribute); err != nil {
			errs.add("spread.attribute", "%s", err.Error())
		}
		if s.Spread.Weight < 0 || s.Spread.Weight > MaxWeight {
			errs.add("spread.weight", "%d: must be 1..%d (0 means %d)", s.Spread.Weight, MaxWeight, MaxWeight)
		}
	}
	s.Restart.validate(&errs)
	return errs
}

func (c *Command) validate(errs *errList) {
	if c.Driver != "" && c.Driver != DriverExec {
		errs.add("command.driver", "unknown driver %q (supported: %s)", c.Driver, DriverExec)
	}
	switch {
	case len(c.Argv) == 0:
		errs.add("command.argv", "must not be empty")
	case len(c.Argv) > MaxArgs:
		errs.add("command.argv", "%d arguments, at most %d are allowed", len(c.Argv), MaxArgs)
	case c.Argv[0] == "":
		errs.add("command.argv[0]", "program must not be empty")
	}
	for i, a := range c.Argv {
		if len(a) > MaxArgLen {
			errs.add(fmt.Sprintf("command.argv[%d]", i), "%d bytes, at most %d are allowed", len(a), MaxArgLen)
		}
		if strings.IndexByte(a, 0) >= 0 {
			errs.add(fmt.Sprintf("command.argv[%d]", i), "contains a NUL byte")
		}
	}
	if len(c.Env) > MaxEnv {
		errs.add("command.env", "%d variables, at most %d are allowed", len(c.Env), MaxEnv)
	}
	for _, k := range sortedKeys(c.Env) {
		v := c.Env[k]
		if k == "" || strings.ContainsAny(k, "=\x00") {
			errs.add(fmt.Sprintf("command.env[%q]", k), "name must be non-empty without '=' or NUL")
		}
		if strings.IndexByte(v, 0) >= 0 || len(v) > MaxArgLen {
			errs.add(fmt.Sprintf("command.env[%q]", k), "value must be at most %d bytes without NUL", MaxArgLen)
		}
	}
	if c.WorkingDir != "" && (!strings.HasPrefix(c.WorkingDir, "/") || strings.IndexByte(c.WorkingDir, 0) >= 0) {
		errs.add("command.working_dir", "%q must be an absolute path", c.WorkingDir)
	}
}

func (r *Restart) validate(errs *errList) {
	switch r.Mode {
	case "", RestartAlways, RestartOnFailure, RestartNever:
	default:
		errs.add("restart.mode", "unknown mode %q (always, on-failure or never)", r.Mode)
	}
	if r.MaxRestarts < 0 {
		errs.add("restart.max_restarts", "%d must be >= 0 (0: unlimited)", r.MaxRestarts)
	}
	if r.Mode == RestartNever && r.MaxRestarts > 0 {
		errs.add("restart.max_restarts", "must be 0 when mode is never")
	}
	initial, err1 := parseDuration(r.Backoff.Initial, DefaultBackoffInitial)
	if err1 != nil {
		errs.add("restart.backoff.initial", "%s", err1.Error())
	}
	maxd, err2 := parseDuration(r.Backoff.Max, DefaultBackoffMax)
	if err2 != nil {
		errs.add("restart.backoff.max", "%s", err2.Error())
	}
	if err1 == nil && err2 == nil && initial > maxd {
		errs.add("restart.backoff", "initial %s is longer than max %s", initial, maxd)
	}
}

func parseDuration(s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration like 500ms, 2s or 1m", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q must be positive", s)
	}
	return d, nil
}

// Ask returns the parsed resources one instance reserves. It returns zero
// for fields that do not parse, which Validate reports.
func (s *Spec) Ask() Resources {
	cpu, _ := ParseCPU(s.Resources.CPU)
	mem, _ := ParseMemory(s.Resources.Memory)
	return Resources{CPUMillis: cpu, MemoryMiB: mem}
}

// RestartMode returns the restart mode with its default applied.
func (r Restart) RestartMode() string {
	if r.Mode == "" {
		return RestartOnFailure
	}
	return r.Mode
}

// InitialBackoff returns the first restart delay with its default applied.
func (r Restart) InitialBackoff() time.Duration {
	d, err := parseDuration(r.Backoff.Initial, DefaultBackoffInitial)
	if err != nil {
		return DefaultBackoffInitial
	}
	return d
}

// MaxBackoff returns the longest restart delay with its default applied.
func (r Restart) MaxBackoff() time.Duration {
	d, err := parseDuration(r.Backoff.Max, DefaultBackoffMax)
	if err != nil {
		return DefaultBackoffMax
	}
	return d
}

// SpreadWeight returns the spread weight with its default applied (0 if
// there is no spread).
func (s *Spec) SpreadWeight() int {
	if s.Spread == nil {
		return 0
	}
	if s.Spread.Weight == 0 {
		return MaxWeight
	}
	return s.Spread.Weight
}
