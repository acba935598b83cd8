package placement

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	version "github.com/hashicorp/go-version"
)

// Constraint operators.
const (
	OpEq        = "="
	OpEqEq      = "==" // alias of =
	OpNe        = "!="
	OpLt        = "<"
	OpLe        = "<="
	OpGt        = ">"
	OpGe        = ">="
	OpIn        = "in"
	OpNotIn     = "not_in"
	OpExists    = "exists"
	OpNotExists = "not_exists"
	OpRegexp    = "regexp"
	OpVersion   = "version"
)

type opKind uint8

const (
	opEq opKind = iota
	opNe
	opLt
	opLe
	opGt
	opGe
	opIn
	opNotIn
	opExists
	opNotExists
	opRegexp
	opVersion
)

var operators = map[string]opKind{
	OpEq: opEq, OpEqEq: opEq, OpNe: opNe, OpLt: opLt, OpLe: opLe, OpGt: opGt, OpGe: opGe,
	OpIn: opIn, OpNotIn: opNotIn, OpExists: opExists, OpNotExists: opNotExists,
	OpRegexp: opRegexp, OpVersion: opVersion,
}

// maxMemo bounds a constraint's per-plan cache of attribute value → result,
// so that constraints on unique attributes (node.id) do not grow it forever.
const maxMemo = 4096

// compiled is a constraint ready to evaluate: value parsed once, results
// memoised by attribute value because most attributes (zone, os, arch) take
// few distinct values across thousands of nodes.
type compiled struct {
	attr string
	op   opKind
	key  string // Constraint.String(), the failure-metrics key
	val  string
	num  float64
	set  map[string]struct{}
	re   *regexp.Regexp
	ver  version.Constraints
	memo map[string]bool
}

var attrRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$`)

func validateAttribute(a string) error {
	switch {
	case a == "":
		return fmt.Errorf("required")
	case len(a) > MaxAttrLen || !attrRe.MatchString(a):
		return fmt.Errorf("%q must be 1-%d letters, digits, '.', '_', '/' or '-', starting and ending with a letter or digit", a, MaxAttrLen)
	case a == strings.TrimSuffix(LabelPrefix, "."):
		return fmt.Errorf("%q needs a key: label.<key>", a)
	}
	return nil
}

// compileConstraint checks c and prepares it for evaluation. Field paths in
// the returned errors are relative to the constraint.
func compileConstraint(c Constraint) (*compiled, []FieldError) {
	var errs errList
	if err := validateAttribute(c.Attribute); err != nil {
		errs.add("attribute", "%s", err.Error())
	}
	op, ok := operators[c.Operator]
	if !ok {
		errs.add("operator", "unknown operator %q (=, !=, <, <=, >, >=, in, not_in, exists, not_exists, regexp, version)", c.Operator)
		return nil, errs
	}
	cc := &compiled{attr: c.Attribute, op: op, key: c.String(), val: c.Value}
	if len(c.Value) > MaxValueLen {
		errs.add("value", "%d bytes, at most %d are allowed", len(c.Value), MaxValueLen)
	}
	switch op {
	case opIn, opNotIn:
		if c.Value != "" {
			errs.add("value", "operator %s takes a list in values, not value", c.Operator)
		}
		if len(c.Values) == 0 {
			errs.add("values", "operator %s needs at least one value", c.Operator)
		}
		if len(c.Values) > MaxValues {
			errs.add("values", "%d values, at most %d are allowed", len(c.Values), MaxValues)
		}
		cc.set = make(map[string]struct{}, len(c.Values))
		for _, v := range c.Values {
			cc.set[v] = struct{}{}
		}
	case opExists, opNotExists:
		if c.Value != "" || len(c.Values) > 0 {
			errs.add("value", "operator %s takes no value", c.Operator)
		}
	default:
		if len(c.Values) > 0 {
			errs.add("values", "operator %s takes one value, not values", c.Operator)
		}
		switch op {
		case opEq, opNe:
			// The empty string is a legitimate value to compare with.
		case opLt, opLe, opGt, opGe:
			f, err := strconv.ParseFloat(strings.TrimSpace(c.Value), 64)
			if err != nil || math.IsNaN(f) {
				errs.add("value", "%q is not a number: %s compares numbers (use version for versions)", c.Value, c.Operator)
			}
			cc.num = f
		case opRegexp:
			re, err := regexp.Compile(c.Value)
			if err != nil {
				errs.add("value", "bad regexp: %s", strings.TrimPrefix(err.Error(), "error parsing regexp: "))
			} else if c.Value == "" {
				errs.add("value", "regexp must not be empty")
			}
			cc.re = re
		case opVersion:
			vc, err := version.NewConstraint(c.Value)
			if err != nil || strings.TrimSpace(c.Value) == "" {
				errs.add("value", "%q is not a version constraint like \">= 1.2, < 2.0\" or \"~> 1.4\"", c.Value)
			}
			cc.ver = vc
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return cc, nil
}

// match reports whether the node satisfies the constraint. A missing
// attribute satisfies only !=, not_in and not_exists; a node value that does
// not parse as a number (ordering operators) or a version never matches.
func (c *compiled) match(n *Node) bool {
	v, ok := n.Lookup(c.attr)
	if !ok {
		return c.op == opNe || c.op == opNotIn || c.op == opNotExists
	}
	switch c.op {
	case opEq:
		return v == c.val
	case opNe:
		return v != c.val
	case opExists:
		return true
	case opNotExists:
		return false
	case opIn:
		_, in := c.set[v]
		return in
	case opNotIn:
		_, in := c.set[v]
		return !in
	}
	if r, hit := c.memo[v]; hit {
		return r
	}
	r := c.eval(v)
	if c.memo == nil {
		c.memo = make(map[string]bool)
	}
	if len(c.memo) < maxMemo {
		c.memo[v] = r
	}
	return r
}

// eval runs the operators that cost more than a map lookup.
func (c *compiled) eval(v string) bool {
	switch c.op {
	case opLt, opLe, opGt, opGe:
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || math.IsNaN(f) {
			return false
		}
		switch c.op {
		case opLt:
			return f < c.num
		case opLe:
			return f <= c.num
		case opGt:
			return f > c.num
		}
		return f >= c.num
	case opRegexp:
		return c.re.MatchString(v)
	case opVersion:
		ver, err := version.NewVersion(strings.TrimSpace(v))
		if err != nil {
			return false
		}
		return c.ver.Check(ver)
	}
	return false
}
