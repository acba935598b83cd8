package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
	"gopkg.in/yaml.v3"
)

// loadConfigFile applies a YAML (or JSON, which is YAML) config file to the
// flags that were not set on the command line or in the environment, through
// urfave/cli's altsrc. Precedence: flag > COLONY_* env > file > default.
// Unknown keys are refused: a typo must not silently fall back to a default.
func loadConfigFile(c *cli.Context, flags []cli.Flag) error {
	path := c.String("config")
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(b, &values); err != nil {
		return fmt.Errorf("config file %s: not valid YAML or JSON: %w", path, err)
	}
	known := map[string]bool{}
	for _, f := range flags {
		for _, n := range f.Names() {
			known[n] = true
		}
	}
	delete(known, "config")
	var unknown []string
	generic := make(map[any]any, len(values))
	for k, v := range values {
		if !known[k] {
			unknown = append(unknown, k)
		}
		generic[k] = v
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		names := make([]string, 0, len(known))
		for n := range known {
			if len(n) > 1 {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		return fmt.Errorf("config file %s: unknown key(s) %s (known keys: %s)", path, strings.Join(unknown, ", "), strings.Join(names, ", "))
	}
	src := altsrc.NewMapInputSource(path, generic)
	if err := altsrc.ApplyInputSourceValues(c, src, flags); err != nil {
		return fmt.Errorf("config file %s: %w", path, lowerFirst(err))
	}
	return nil
}

func lowerFirst(err error) error {
	s := err.Error()
	if s == "" {
		return err
	}
	return errors.New(strings.ToLower(s[:1]) + s[1:])
}
