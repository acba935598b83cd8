package gossip

import (
	"errors"
	"fmt"
	"net"
	"strings"

	sockaddr "github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/go-sockaddr/template"
)

// ResolveIP turns an address setting into one IP. It accepts a literal IP or
// a go-sockaddr template such as `{{ GetPrivateIP }}` or
// `{{ GetPrivateInterfaces | include "network" "10.0.0.0/8" | attr "address" }}`,
// which is how one image serves hosts with different network layouts.
func ResolveIP(setting, what string) (string, error) {
	s := strings.TrimSpace(setting)
	if strings.Contains(s, "{{") {
		out, err := template.Parse(s)
		if err != nil {
			return "", fmt.Errorf("%s template %q: %w", what, setting, err)
		}
		s = strings.TrimSpace(out)
		if s == "" {
			return "", fmt.Errorf("%s template %q matched no address on this host", what, setting)
		}
		if strings.ContainsAny(s, " \t") {
			return "", fmt.Errorf("%s template %q matched several addresses (%s): narrow it to one", what, setting, s)
		}
	}
	if net.ParseIP(s) == nil {
		return "", fmt.Errorf("%s %q is not an IP address", what, setting)
	}
	return s, nil
}

// ErrAmbiguousAdvertise is returned when gossip binds to all interfaces, no
// advertise address is set and the host has several private addresses.
var ErrAmbiguousAdvertise = errors.New("cannot choose an advertise address")

// ChooseAdvertise returns the address to advertise when bind is a wildcard
// and advertise is empty: the host's only private IPv4 address. With several
// it fails with a hint rather than guess (a wrong guess makes a node that
// joins but can never be probed, which the cluster then declares dead).
func ChooseAdvertise(bind, advertise string) (string, error) {
	if advertise != "" {
		return advertise, nil
	}
	ip := net.ParseIP(bind)
	if ip != nil && !ip.IsUnspecified() {
		return bind, nil
	}
	privs, err := sockaddr.GetPrivateInterfaces()
	if err != nil {
		return "", fmt.Errorf("%w: listing interfaces: %w", ErrAmbiguousAdvertise, err)
	}
	var addrs []string
	seen := map[string]bool{}
	for _, p := range privs {
		a := sockaddr.ToIPAddr(p.SockAddr)
		if a == nil || (*a).Type() != sockaddr.TypeIPv4 {
			continue
		}
		s := (*a).NetIP().String()
		if !seen[s] {
			seen[s] = true
			addrs = append(addrs, s+" ("+p.Name+")")
		}
	}
	switch len(addrs) {
	case 1:
		return strings.Fields(addrs[0])[0], nil
	case 0:
		return "", fmt.Errorf("%w: no private IPv4 address found on this host: set --advertise (or --bind) to the address other nodes reach this one at", ErrAmbiguousAdvertise)
	default:
		return "", fmt.Errorf("%w: this host has several private addresses: %s; set --advertise (or --bind) to the one other nodes reach this host at, e.g. --advertise %s, or a template such as --advertise '{{ GetPrivateInterfaces | include \"name\" \"eth0\" | attr \"address\" }}'", ErrAmbiguousAdvertise, strings.Join(addrs, ", "), strings.Fields(addrs[0])[0])
	}
}
