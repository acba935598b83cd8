package provider

import (
	"bytes"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Kinds lists the provider kinds New builds.
func Kinds() []string { return []string{"docker", "exec", "local"} }

// New builds a provider by kind ("local", "docker" or "exec") so a pool
// can name its provider in configuration. cfg is the kind's typed config
// (LocalConfig, DockerConfig, ExecConfig, or a pointer to one), or a
// map[string]any as decoded from a YAML or JSON pool config: its keys are
// the config's yaml names (base_dir, grace_period: 10s, types: [...]),
// unset keys keep the kind's defaults, and unknown keys are an error.
// logger, if not nil, replaces the config's Logger.
func New(kind string, cfg any, logger *slog.Logger) (Provider, error) {
	switch kind {
	case "local":
		c, err := decodeConfig(kind, cfg, DefaultLocalConfig())
		if err != nil {
			return nil, err
		}
		if logger != nil {
			c.Logger = logger
		}
		return NewLocal(c)
	case "docker":
		c, err := decodeConfig(kind, cfg, DefaultDockerConfig())
		if err != nil {
			return nil, err
		}
		if logger != nil {
			c.Logger = logger
		}
		return NewDocker(c)
	case "exec":
		c, err := decodeConfig(kind, cfg, DefaultExecConfig())
		if err != nil {
			return nil, err
		}
		if logger != nil {
			c.Logger = logger
		}
		return NewExec(c)
	}
	return nil, fmt.Errorf("%w: unknown provider kind %q (want one of %s)", ErrInvalid, kind, strings.Join(Kinds(), ", "))
}

// decodeConfig turns cfg into a T: T or *T as is, a map through YAML over
// the defaults (yaml.v3 reads durations like "10s").
func decodeConfig[T any](kind string, cfg any, def T) (T, error) {
	switch c := cfg.(type) {
	case T:
		return c, nil
	case *T:
		if c == nil {
			return def, nil
		}
		return *c, nil
	case nil:
		return def, nil
	case map[string]any:
		b, err := yaml.Marshal(c)
		if err != nil {
			return def, fmt.Errorf("%w: %s provider config: %w", ErrInvalid, kind, err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		out := def
		if err := dec.Decode(&out); err != nil {
			return def, fmt.Errorf("%w: %s provider config: %w", ErrInvalid, kind, explainYAML(c, def, err))
		}
		return out, nil
	}
	return def, fmt.Errorf("%w: %s provider config has type %T, want %T or map[string]any", ErrInvalid, kind, cfg, def)
}

// explainYAML names the key that fails to decode: the generated YAML's
// line numbers mean nothing to whoever wrote the map.
func explainYAML[T any](m map[string]any, def T, err error) error {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		b, merr := yaml.Marshal(map[string]any{k: m[k]})
		if merr != nil {
			continue
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		one := def
		if kerr := dec.Decode(&one); kerr != nil {
			msg := kerr.Error()
			if i := strings.LastIndex(msg, ": "); i >= 0 && strings.Contains(msg, "line ") {
				msg = msg[i+2:]
			}
			return fmt.Errorf("key %q: %s", k, strings.TrimSpace(msg))
		}
	}
	return err
}
