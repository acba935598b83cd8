package consensus

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// CommandFormatV1 is the only command envelope version so far: byte 0 is
// the version, byte 1 the CommandType, the rest a JSON body. The version
// changes only if the envelope itself changes; new commands get new types.
const CommandFormatV1 byte = 1

// MaxCommandSize bounds an encoded command. Raft entries are replicated to
// every voter and kept in the log: large blobs do not belong there.
const MaxCommandSize = 512 << 10

// CommandType identifies a command in the Raft log. Values are persisted:
// never renumber or reuse one, even after its command is retired.
type CommandType uint8

// Command types. Add new ones at the end (see DESIGN.md, "adding a command").
const (
	CmdSetSetting         CommandType = 1
	CmdDeleteSetting      CommandType = 2
	CmdPutDeployment      CommandType = 3
	CmdScaleDeployment    CommandType = 4
	CmdDeleteDeployment   CommandType = 5
	CmdSetDrain           CommandType = 6
	CmdApplyPlan          CommandType = 7
	CmdSetMonitorPlan     CommandType = 8
	CmdPutPool            CommandType = 9
	CmdDeletePool         CommandType = 10
	CmdPutIntent          CommandType = 11
	CmdAppendEvent        CommandType = 12
	CmdACLBootstrap       CommandType = 13
	CmdACLTokenPut        CommandType = 14
	CmdACLTokenDelete     CommandType = 15
	CmdSetMonitorPlanPart CommandType = 16
)

// Command is one change to the cluster state. Commands are validated
// before they are written (on the leader) and again when decoded, and
// applied deterministically by every voter.
type Command interface {
	// CommandType is the type byte written in the envelope.
	CommandType() CommandType
	// Validate checks the command on its own, without the state.
	Validate() error
	// apply changes the state; s is locked for writing. A returned error is
	// reported to the writer and must be deterministic: every voter
	// returns the same one.
	apply(s *State, index uint64) (any, error)
}

// commandRegistry maps each type to its name and a constructor for its body.
// Adding a command is one line here plus its type (see DESIGN.md).
var commandRegistry = map[CommandType]struct {
	name string
	new  func() Command
}{
	CmdSetSetting:         {"set-setting", func() Command { return &SetSetting{} }},
	CmdDeleteSetting:      {"delete-setting", func() Command { return &DeleteSetting{} }},
	CmdPutDeployment:      {"put-deployment", func() Command { return &PutDeployment{} }},
	CmdScaleDeployment:    {"scale-deployment", func() Command { return &ScaleDeployment{} }},
	CmdDeleteDeployment:   {"delete-deployment", func() Command { return &DeleteDeployment{} }},
	CmdSetDrain:           {"set-drain", func() Command { return &SetDrain{} }},
	CmdApplyPlan:          {"apply-plan", func() Command { return &ApplyPlan{} }},
	CmdPutPool:            {"put-pool", func() Command { return &PutPool{} }},
	CmdDeletePool:         {"delete-pool", func() Command { return &DeletePool{} }},
	CmdPutIntent:          {"put-intent", func() Command { return &PutIntent{} }},
	CmdAppendEvent:        {"append-event", func() Command { return &AppendEvent{} }},
	CmdSetMonitorPlan:     {"set-monitor-plan", func() Command { return &SetMonitorPlan{} }},
	CmdACLBootstrap:       {"acl-bootstrap", func() Command { return &ACLBootstrap{} }},
	CmdACLTokenPut:        {"acl-token-put", func() Command { return &ACLTokenPut{} }},
	CmdACLTokenDelete:     {"acl-token-delete", func() Command { return &ACLTokenDelete{} }},
	CmdSetMonitorPlanPart: {"set-monitor-plan-part", func() Command { return &SetMonitorPlanPart{} }},
}

// String names the type for logs and errors.
func (t CommandType) String() string {
	if c, ok := commandRegistry[t]; ok {
		return c.name
	}
	return fmt.Sprintf("command-type-%d", uint8(t))
}

// EncodeCommand validates c and encodes it in the current envelope.
func EncodeCommand(c Command) ([]byte, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: nil command", ErrInvalidCommand)
	}
	if _, ok := commandRegistry[c.CommandType()]; !ok {
		return nil, fmt.Errorf("%w: %d", ErrUnknownCommandType, c.CommandType())
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidCommand, c.CommandType(), err)
	}
	body, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", c.CommandType(), err)
	}
	buf := make([]byte, 0, 2+len(body))
	buf = append(buf, CommandFormatV1, byte(c.CommandType()))
	buf = append(buf, body...)
	if len(buf) > MaxCommandSize {
		return nil, fmt.Errorf("%w: %s is %d bytes, more than %d", ErrInvalidCommand, c.CommandType(), len(buf), MaxCommandSize)
	}
	return buf, nil
}

// DecodeCommand decodes and validates an encoded command. It never panics:
// short or garbled input, unknown versions and unknown types are errors.
func DecodeCommand(b []byte) (Command, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: %d bytes is too short for a command header", ErrInvalidCommand, len(b))
	}
	if b[0] != CommandFormatV1 {
		return nil, fmt.Errorf("%w: %d (this build reads %d)", ErrUnknownCommandVersion, b[0], CommandFormatV1)
	}
	t := CommandType(b[1])
	spec, ok := commandRegistry[t]
	if !ok {
		return nil, fmt.Errorf("%w: %d", ErrUnknownCommandType, b[1])
	}
	if len(b) > MaxCommandSize {
		return nil, fmt.Errorf("%w: %s is %d bytes, more than %d", ErrInvalidCommand, t, len(b), MaxCommandSize)
	}
	c := spec.new()
	dec := json.NewDecoder(bytes.NewReader(b[2:]))
	// A field this build does not know may change the meaning of the
	// command: refuse it rather than apply half of it.
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return nil, fmt.Errorf("%w: %s body: %w", ErrInvalidCommand, t, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %s body: trailing data", ErrInvalidCommand, t)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidCommand, t, err)
	}
	return c, nil
}
