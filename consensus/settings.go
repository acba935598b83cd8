package consensus

import (
	"errors"
	"fmt"
	"regexp"
	"unicode"
	"unicode/utf8"
)

// Limits on cluster settings. Settings are small knobs, not a blob store.
const (
	MaxSettingKeyLen   = 128
	MaxSettingValueLen = 4096
)

var settingKeyRe = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9._/-]*[a-zA-Z0-9])?$`)

// ValidateSettingKey reports whether key is an acceptable setting name:
// 1-128 characters of letters, digits, '.', '_', '-', '/', starting and
// ending with a letter or digit (the label key rules).
func ValidateSettingKey(key string) error {
	if len(key) == 0 || len(key) > MaxSettingKeyLen || !settingKeyRe.MatchString(key) {
		return fmt.Errorf("setting key %q: must be 1-%d characters of letters, digits, '.', '_', '-', '/', starting and ending with a letter or digit", key, MaxSettingKeyLen)
	}
	return nil
}

// ValidateSettingValue reports whether value is acceptable: valid UTF-8 of
// at most 4096 bytes, with no control characters other than tab and newline.
func ValidateSettingValue(value string) error {
	if len(value) > MaxSettingValueLen {
		return fmt.Errorf("setting value is %d bytes, more than %d", len(value), MaxSettingValueLen)
	}
	if !utf8.ValidString(value) {
		return errors.New("setting value is not valid UTF-8")
	}
	for _, r := range value {
		if unicode.IsControl(r) && r != '\t' && r != '\n' {
			return fmt.Errorf("setting value contains control character %U", r)
		}
	}
	return nil
}

// Setting is one cluster setting with the Raft indexes that created and
// last modified it.
type Setting struct {
	Key         string `json:"key"`
	Value       string `json:"value"`
	CreateIndex uint64 `json:"create_index"`
	ModifyIndex uint64 `json:"modify_index"`
}

// tableSettings names the settings table in per-table indexes.
const tableSettings = "settings"

// SetSetting creates or replaces a cluster setting.
type SetSetting struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// CommandType implements Command.
func (*SetSetting) CommandType() CommandType { return CmdSetSetting }

// Validate implements Command.
func (c *SetSetting) Validate() error {
	if err := ValidateSettingKey(c.Key); err != nil {
		return err
	}
	return ValidateSettingValue(c.Value)
}

func (c *SetSetting) apply(s *State, index uint64) (any, error) {
	prev, ok := s.settings[c.Key]
	next := Setting{Key: c.Key, Value: c.Value, CreateIndex: index, ModifyIndex: index}
	if ok {
		next.CreateIndex = prev.CreateIndex
	}
	s.settings[c.Key] = next
	s.tables[tableSettings] = index
	return next, nil
}

// DeleteSetting removes a cluster setting; deleting a missing key is not
// an error (the result reports whether it existed).
type DeleteSetting struct {
	Key string `json:"key"`
}

// CommandType implements Command.
func (*DeleteSetting) CommandType() CommandType { return CmdDeleteSetting }

// Validate implements Command.
func (c *DeleteSetting) Validate() error { return ValidateSettingKey(c.Key) }

// DeleteResult is what applying a DeleteSetting returns.
type DeleteResult struct {
	Existed bool `json:"existed"`
}

func (c *DeleteSetting) apply(s *State, index uint64) (any, error) {
	_, ok := s.settings[c.Key]
	if ok {
		delete(s.settings, c.Key)
		// Only a real change moves the table index, so blocking queries
		// do not wake for nothing.
		s.tables[tableSettings] = index
	}
	return DeleteResult{Existed: ok}, nil
}
