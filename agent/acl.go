package agent

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"colony/consensus"
)

// Access control. Every route declares the Access it requires when it is
// registered (router.handle); with --acl-enabled the router checks the
// caller's token against it before the handler runs. Tokens live hashed in
// the Raft state (consensus/acl.go): voters resolve them from their own
// state; other nodes keep a replica of the token table, fed by a blocking
// query to a voter, so a deletion takes effect everywhere within moments,
// and ask a voter about a token their replica lacks (one created a moment
// ago, or before the replica's first copy arrived).
//
// Agent-to-agent calls carry the agent token (--acl-agent-token, the same
// on every agent, never stored in the state) when the agent acts on its
// own behalf; a call made while serving a client request (forwarding to
// the leader, stale reads from voters, fan-out to the nodes running a
// deployment) carries the client's own token instead, so a node never
// lends its rights to a client (tokenTransport).

// HeaderToken carries the ACL token of a request. "Authorization: Bearer
// <token>" is accepted as well.
const HeaderToken = "X-Colony-Token"

// PolicyAgent is the policy of the agent token (--acl-agent-token). It is
// not a token policy in the state: only the configured agent token has it.
const PolicyAgent = "agent"

// Access is what a route requires. The zero value is invalid: a route
// registered without one panics at start-up.
type Access uint8

// Accesses, from open to restricted. See policyGrants for who has which.
const (
	accessUnset Access = iota
	// AccessPublic needs no token, ever (health checks, ACL bootstrap).
	AccessPublic
	// AccessRead is a read; anonymous callers may read when
	// --acl-default-read is allow.
	AccessRead
	// AccessMetrics is a Prometheus scrape: a read, but
	// --metrics-require-token refuses it to anonymous callers.
	AccessMetrics
	// AccessDeploy changes deployments (what runs).
	AccessDeploy
	// AccessOperator changes the cluster: membership, drain, pools,
	// settings.
	AccessOperator
	// AccessManagement manages ACL tokens.
	AccessManagement
	// AccessAgent is internal: agent-to-agent calls only.
	AccessAgent
	accessEnd
)

func (x Access) valid() bool { return x > accessUnset && x < accessEnd }

func (x Access) String() string {
	switch x {
	case AccessPublic:
		return "public"
	case AccessRead:
		return "read"
	case AccessMetrics:
		return "metrics"
	case AccessDeploy:
		return "deploy"
	case AccessOperator:
		return "operator"
	case AccessManagement:
		return "management"
	case AccessAgent:
		return "agent"
	}
	return fmt.Sprintf("access(%d)", uint8(x))
}

// policyGrants is what each policy may do. management may do anything.
var policyGrants = map[string][]Access{
	consensus.PolicyReadOnly: {AccessRead, AccessMetrics},
	consensus.PolicyDeploy:   {AccessRead, AccessMetrics, AccessDeploy},
	consensus.PolicyOperator: {AccessRead, AccessMetrics, AccessOperator},
	PolicyAgent:              {AccessRead, AccessMetrics, AccessAgent},
	consensus.PolicyManagement: {AccessRead, AccessMetrics, AccessDeploy, AccessOperator,
		AccessManagement, AccessAgent},
}

func allows(policy string, x Access) bool {
	for _, g := range policyGrants[policy] {
		if g == x {
			return true
		}
	}
	return x == AccessPublic
}

// policiesFor names the policies granting x, for error messages.
func policiesFor(x Access) string {
	var out []string
	for _, p := range append(append([]string{}, consensus.Policies...), PolicyAgent) {
		if allows(p, x) {
			out = append(out, p)
		}
	}
	if len(out) == 1 {
		return out[0]
	}
	return strings.Join(out[:len(out)-1], ", ") + " or " + out[len(out)-1]
}

// Limits on a token as sent.
const (
	MaxTokenLen      = 256
	MinAgentTokenLen = 16
)

const authorizationPref = "bearer "

// ValidateToken checks a token's syntax: 1-256 printable ASCII characters
// without spaces (it travels in an HTTP header).
func ValidateToken(tok string) error {
	if tok == "" || len(tok) > MaxTokenLen {
		return fmt.Errorf("token must be 1-%d characters", MaxTokenLen)
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("token may hold only printable ASCII without spaces (byte %d is not)", i)
		}
	}
	return nil
}

// ParseToken extracts the request's token from X-Colony-Token or
// "Authorization: Bearer"; "" means no token. Two different tokens, or a
// malformed one, are an error: the caller must not guess which applies.
func ParseToken(h http.Header) (string, error) {
	tok := ""
	add := func(v string) error {
		if tok != "" && v != tok {
			return errors.New("the request carries two different tokens")
		}
		tok = v
		return nil
	}
	for _, v := range h.Values(HeaderToken) {
		if v = strings.TrimSpace(v); v != "" {
			if err := add(v); err != nil {
				return "", err
			}
		}
	}
	for _, v := range h.Values("Authorization") {
		if len(v) < len(authorizationPref) || !strings.EqualFold(v[:len(authorizationPref)], authorizationPref) {
			return "", errors.New("authorization header: want \"Bearer <token>\"")
		}
		if v = strings.TrimSpace(v[len(authorizationPref):]); v == "" {
			return "", errors.New("authorization header: empty bearer token")
		}
		if err := add(v); err != nil {
			return "", err
		}
	}
	if tok == "" {
		return "", nil
	}
	if err := ValidateToken(tok); err != nil {
		return "", fmt.Errorf("%s header: %w", HeaderToken, err)
	}
	return tok, nil
}

// clientTokenKey marks a context as serving a client request; its value
// is the client's token ("" for an anonymous client).
type clientTokenKey struct{}

// tokenTransport adds a token to agent-to-agent requests that carry none:
// the client's, when the request is made while serving one (its context
// says so), else the agent token. A forwarded request keeps the client's
// headers as they are.
type tokenTransport struct {
	base       http.RoundTripper
	agentToken string
}

func (t *tokenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	tok, onBehalf := req.Context().Value(clientTokenKey{}).(string)
	if !onBehalf {
		tok = t.agentToken
	}
	if tok == "" || req.Header.Get(HeaderToken) != "" || req.Header.Get("Authorization") != "" {
		return t.base.RoundTrip(req)
	}
	req = req.Clone(req.Context()) // a RoundTripper must not change its request
	req.Header.Set(HeaderToken, tok)
	return t.base.RoundTrip(req)
}

// authorize wraps a route's handler with its access check.
func (a *Agent) authorize(rt Route, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, err := ParseToken(r.Header)
		if err != nil {
			writeError(w, http.StatusUnauthorized, err)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), clientTokenKey{}, tok))
		if !a.cfg.ACLEnabled || rt.Access == AccessPublic {
			h(w, r)
			return
		}
		if tok == "" {
			if a.anonymousAllowed(rt.Access) {
				h(w, r)
				return
			}
			writeError(w, http.StatusUnauthorized, fmt.Errorf("ACL: %s %s needs a token with policy %s: pass it in the %s header (colony --token or COLONY_TOKEN)", r.Method, r.URL.Path, policiesFor(rt.Access), HeaderToken))
			return
		}
		policy, code, err := a.resolveToken(tok)
		if err != nil {
			writeError(w, code, err)
			return
		}
		if !allows(policy, rt.Access) {
			writeError(w, http.StatusForbidden, fmt.Errorf("ACL: permission denied: the token's policy %s may not %s %s, which needs policy %s", policy, r.Method, r.URL.Path, policiesFor(rt.Access)))
			return
		}
		h(w, r)
	}
}

func (a *Agent) anonymousAllowed(x Access) bool {
	switch x {
	case AccessRead:
		return a.cfg.ACLDefaultRead != ACLDeny
	case AccessMetrics:
		return a.cfg.ACLDefaultRead != ACLDeny && !a.cfg.MetricsRequireToken
	}
	return false
}

// aclReplica is the token table on a node that runs no Raft.
type aclReplica struct {
	byHash map[string]string // secret hash → policy
	index  uint64
}

// resolveToken returns a token's policy, or the status and error to answer.
func (a *Agent) resolveToken(tok string) (string, int, error) {
	if a.cfg.ACLAgentToken != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(a.cfg.ACLAgentToken)) == 1 {
		return PolicyAgent, 0, nil
	}
	hash := consensus.HashSecret(tok)
	if n := a.raftNode(); n != nil {
		if t, ok := n.State().ACLTokenBySecretHash(hash); ok {
			return t.Policy, 0, nil
		}
		return "", http.StatusUnauthorized, errNoSuchToken
	}
	rep := a.aclTokens.Load()
	if rep != nil {
		if p, ok := rep.byHash[hash]; ok {
			return p, 0, nil
		}
	}
	// Not in the replica: it may not have arrived yet, or the token was
	// created a moment ago. Ask a voter (by hash) before refusing.
	p, found, err := a.resolveFromVoter(hash)
	switch {
	case err == nil && found:
		return p, 0, nil
	case err == nil || rep != nil:
		return "", http.StatusUnauthorized, errNoSuchToken
	}
	return "", http.StatusServiceUnavailable, fmt.Errorf("ACL: %s has no copy of the token table yet and no voter answered (%w); retry shortly", a.cfg.NodeName, err)
}

var errNoSuchToken = errors.New("ACL: token not found (deleted, mistyped, or from another cluster)")

// resolveFromVoter looks a secret hash up on a random live voter, with
// the agent token.
func (a *Agent) resolveFromVoter(hash string) (string, bool, error) {
	vs := a.voterMembers()
	if len(vs) == 0 {
		return "", false, errors.New("no voter known yet")
	}
	v := vs[rand.IntN(len(vs))]
	ctx, cancel := context.WithTimeout(a.ctx, 3*time.Second)
	defer cancel()
	c, _ := NewClient(apiAddr(v))
	c.http = a.httpClient
	var res aclResolveResult
	code, err := c.do(ctx, "GET", "/v1/acl/resolve?hash="+url.QueryEscape(hash), nil, &res, false)
	if code == http.StatusNotFound {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("ask %s: %w", v.Name, err)
	}
	return res.Policy, true, nil
}

type aclResolveResult struct {
	Policy string `json:"policy"`
}

// handleACLResolve answers a non-voter's lookup of one secret hash from
// this voter's state.
func (a *Agent) handleACLResolve(w http.ResponseWriter, r *http.Request) {
	n := a.raftNode()
	if n == nil {
		writeError(w, http.StatusServiceUnavailable, fmt.Errorf("%s is not a voter and holds no cluster state", a.cfg.NodeName))
		return
	}
	t, ok := n.State().ACLTokenBySecretHash(r.URL.Query().Get("hash"))
	if !ok {
		writeError(w, http.StatusNotFound, errNoSuchToken)
		return
	}
	writeJSON(w, http.StatusOK, aclResolveResult{Policy: t.Policy})
}

// aclLoop keeps this node's replica of the token table while it runs no
// Raft; a voter resolves tokens from its own state and drops the replica.
func (a *Agent) aclLoop() {
	var index uint64
	fail := 0
	for a.ctx.Err() == nil {
		wait := time.Duration(0)
		if a.raftNode() != nil {
			a.aclTokens.Store(nil)
			index, wait = 0, time.Second
		} else if rep, err := a.fetchACLReplica(index); err != nil {
			fail++
			wait = min(time.Duration(fail)*time.Second, 15*time.Second) + time.Duration(rand.Int64N(int64(time.Second)))
			if fail == 1 || fail%10 == 0 {
				a.logger.Warn("cannot fetch the ACL token table; retrying", "subsystem", "acl", "error", err, "retry_in", wait.Round(time.Second).String())
			}
		} else {
			fail = 0
			if rep.index < index {
				rep.index = 0 // restored from an older snapshot: start over
			}
			index = rep.index
			a.aclTokens.Store(rep)
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-a.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

func (a *Agent) fetchACLReplica(index uint64) (*aclReplica, error) {
	b, idx, err := a.voterLongPoll("/v1/acl/replica", url.Values{}, index, 5*time.Minute, 64<<20)
	if err != nil {
		return nil, err
	}
	var ts []consensus.ACLToken
	if err := json.Unmarshal(b, &ts); err != nil {
		return nil, fmt.Errorf("acl replica: %w", err)
	}
	rep := &aclReplica{byHash: make(map[string]string, len(ts)), index: idx}
	for _, t := range ts {
		rep.byHash[t.SecretHash] = t.Policy
	}
	return rep, nil
}

// ACL endpoints.

// ACLTokenRequest is the body of PUT /v1/acl/token.
type ACLTokenRequest struct {
	Policy      string `json:"policy"`
	Description string `json:"description,omitempty"`
}

// ACLTokenInfo describes a token; SecretID is set only in the answer that
// created it (the cluster keeps only its hash).
type ACLTokenInfo struct {
	AccessorID  string `json:"accessor_id"`
	SecretID    string `json:"secret_id,omitempty"`
	Policy      string `json:"policy"`
	Description string `json:"description"`
	CreateIndex uint64 `json:"create_index"`
}

func (a *Agent) aclRoutes(r *router) {
	r.handle("POST", "/v1/acl/bootstrap", AccessPublic, a.handleACLBootstrap)
	r.handle("PUT", "/v1/acl/token", AccessManagement, a.handleACLTokenCreate)
	r.handle("GET", "/v1/acl/tokens", AccessManagement, a.handleACLTokens)
	r.handle("DELETE", "/v1/acl/token/{accessor}", AccessManagement, a.handleACLTokenDelete)
	r.handle("GET", "/v1/acl/replica", AccessAgent, a.handleACLReplica)
	r.handle("GET", "/v1/acl/resolve", AccessAgent, a.handleACLResolve)
}

// aclOn refuses ACL requests on an agent without ACLs.
func (a *Agent) aclOn(w http.ResponseWriter) bool {
	if !a.cfg.ACLEnabled {
		writeError(w, http.StatusBadRequest, fmt.Errorf("ACLs are disabled on %s: start every agent with --acl-enabled and --acl-agent-token", a.cfg.NodeName))
		return false
	}
	return true
}

// newToken makes a fresh accessor and secret (random UUIDs, as Consul's).
func newToken(policy, description string) (consensus.ACLToken, string) {
	secret := uuid.NewString()
	return consensus.ACLToken{AccessorID: uuid.NewString(), SecretHash: consensus.HashSecret(secret), Policy: policy, Description: description}, secret
}

// applyACL commits an ACL command and answers with the token it returns.
func (a *Agent) applyACL(w http.ResponseWriter, r *http.Request, n *consensus.Node, cmd consensus.Command, secret string) {
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	idx, v, err := n.Apply(ctx, cmd)
	if err != nil {
		aclApplyError(w, err)
		return
	}
	a.served(w, idx)
	t, ok := v.(consensus.ACLToken)
	if !ok {
		writeJSON(w, http.StatusOK, WriteResult{Index: idx})
		return
	}
	writeJSON(w, http.StatusOK, ACLTokenInfo{AccessorID: t.AccessorID, SecretID: secret, Policy: t.Policy, Description: t.Description, CreateIndex: t.CreateIndex})
}

// aclApplyError answers a failed ACL write: Raft trouble as every write,
// a refusal by the state (decided in apply) as a conflict.
func aclApplyError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, consensus.ErrACLBootstrapped):
		writeError(w, http.StatusForbidden, err) // as Consul answers
	case errors.Is(err, consensus.ErrACLTokenNotFound):
		writeError(w, http.StatusNotFound, err)
	case errors.Is(err, consensus.ErrInvalidCommand), errors.Is(err, consensus.ErrNotLeader), errors.Is(err, consensus.ErrNoLeader),
		errors.Is(err, consensus.ErrQuorumLost), errors.Is(err, consensus.ErrLeadershipLost), errors.Is(err, consensus.ErrShutdown),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		raftError(w, err)
	default:
		writeError(w, http.StatusConflict, err)
	}
}

func (a *Agent) handleACLBootstrap(w http.ResponseWriter, r *http.Request) {
	if !a.aclOn(w) {
		return
	}
	n, ok := a.routeWrite(w, r)
	if !ok {
		return
	}
	t, secret := newToken(consensus.PolicyManagement, "bootstrap management token")
	a.applyACL(w, r, n, &consensus.ACLBootstrap{Token: t}, secret)
}

func (a *Agent) handleACLTokenCreate(w http.ResponseWriter, r *http.Request) {
	if !a.aclOn(w) {
		return
	}
	n, ok := a.routeWrite(w, r) // before reading the body: forwarding needs it
	if !ok {
		return
	}
	var req ACLTokenRequest
	if !decodeBody(w, r, &req) {
		return
	}
	t, secret := newToken(req.Policy, req.Description)
	if err := t.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	a.applyACL(w, r, n, &consensus.ACLTokenPut{Token: t}, secret)
}

func (a *Agent) handleACLTokens(w http.ResponseWriter, r *http.Request) {
	if !a.aclOn(w) {
		return
	}
	ts, ok := blockingRead(a, w, r, (*consensus.State).ACLTokens)
	if !ok {
		return
	}
	out := make([]ACLTokenInfo, 0, len(ts))
	for _, t := range ts {
		out = append(out, ACLTokenInfo{AccessorID: t.AccessorID, Policy: t.Policy, Description: t.Description, CreateIndex: t.CreateIndex})
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *Agent) handleACLTokenDelete(w http.ResponseWriter, r *http.Request) {
	if !a.aclOn(w) {
		return
	}
	cmd := &consensus.ACLTokenDelete{AccessorID: r.PathValue("accessor")}
	n, ok := a.validWrite(w, r, cmd)
	if !ok {
		return
	}
	a.applyACL(w, r, n, cmd, "")
}

// handleACLReplica serves the token table, hashes included, to agents
// that run no Raft (aclLoop).
func (a *Agent) handleACLReplica(w http.ResponseWriter, r *http.Request) {
	ts, ok := blockingRead(a, w, r, (*consensus.State).ACLTokens)
	if ok {
		writeJSON(w, http.StatusOK, ts)
	}
}

// metricsHandler serves Prometheus metrics (on the API, and on
// --metrics-addr when set).
func (a *Agent) metricsHandler() http.Handler {
	return promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{})
}
