package gossip

import (
	"strconv"
	"sync"
	"sync/atomic"

	gometrics "github.com/hashicorp/go-metrics"
	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
)

// memberlist reports its internals through the process-wide go-metrics sink.
// Several agents can live in one process (tests, the scale harness), so every
// memberlist instance tags its metrics with a unique label and one router
// sink dispatches each sample to the counters of the instance it came from.

const routeLabel = "colony_gossip"

var (
	routerOnce sync.Once
	routes     sync.Map // route token -> *counters
	routeSeq   atomic.Uint64
)

type counters struct {
	probes      atomic.Uint64
	suspicions  atomic.Uint64
	deadMsgs    atomic.Uint64
	aliveMsgs   atomic.Uint64
	udpSentMsgs atomic.Uint64
	udpSent     atomic.Uint64
	udpRecv     atomic.Uint64
	tcpSentMsgs atomic.Uint64
	tcpSent     atomic.Uint64
	tcpRecv     atomic.Uint64
	pushPulls   atomic.Uint64
	health      atomic.Int64
	rejected    atomic.Uint64

	recordRequests atomic.Uint64
	dupMsgs        atomic.Uint64
}

func installRouter() {
	routerOnce.Do(func() {
		cfg := gometrics.DefaultConfig("")
		cfg.EnableHostname = false
		cfg.EnableHostnameLabel = false
		cfg.EnableRuntimeMetrics = false
		cfg.EnableTypePrefix = false
		cfg.EnableServiceLabel = false
		// Only memberlist's metrics are routed; Raft's are read from Raft itself.
		cfg.AllowedPrefixes = []string{"memberlist"}
		cfg.BlockedPrefixes = nil
		cfg.FilterDefault = false
		_, _ = gometrics.NewGlobal(cfg, routerSink{})
	})
}

func newRoute() (string, *counters) {
	installRouter()
	token := strconv.FormatUint(routeSeq.Add(1), 10)
	c := &counters{}
	routes.Store(token, c)
	return token, c
}

func dropRoute(token string) { routes.Delete(token) }

// routerSink implements go-metrics' MetricSink.
type routerSink struct{}

func lookup(labels []gometrics.Label) *counters {
	for _, l := range labels {
		if l.Name == routeLabel {
			if c, ok := routes.Load(l.Value); ok {
				return c.(*counters)
			}
		}
	}
	return nil
}

func keyIs(key []string, parts ...string) bool {
	if len(key) != len(parts) {
		return false
	}
	for i := range parts {
		if key[i] != parts[i] {
			return false
		}
	}
	return true
}

func (routerSink) SetGauge(key []string, val float32) {}
func (routerSink) SetGaugeWithLabels(key []string, val float32, labels []gometrics.Label) {
	if c := lookup(labels); c != nil && keyIs(key, "memberlist", "health", "score") {
		c.health.Store(int64(val))
	}
}
func (routerSink) SetPrecisionGauge(key []string, val float64)                                     {}
func (routerSink) SetPrecisionGaugeWithLabels(key []string, val float64, labels []gometrics.Label) {}
func (routerSink) EmitKey(key []string, val float32)                                               {}
func (routerSink) IncrCounter(key []string, val float32)                                           {}
func (routerSink) IncrCounterWithLabels(key []string, val float32, labels []gometrics.Label) {
	c := lookup(labels)
	if c == nil || len(key) != 3 || key[0] != "memberlist" {
		return
	}
	switch key[1] + "." + key[2] {
	case "msg.suspect":
		c.suspicions.Add(1)
	case "msg.dead":
		c.deadMsgs.Add(1)
	case "msg.alive":
		c.aliveMsgs.Add(1)
	case "udp.sent":
		c.udpSentMsgs.Add(1)
		c.udpSent.Add(uint64(val))
	case "tcp.sent":
		c.tcpSentMsgs.Add(1)
		c.tcpSent.Add(uint64(val))
	}
}
func (routerSink) AddSample(key []string, val float32) {}
func (routerSink) AddSampleWithLabels(key []string, val float32, labels []gometrics.Label) {
	c := lookup(labels)
	if c == nil {
		return
	}
	switch {
	case keyIs(key, "memberlist", "probeNode"):
		c.probes.Add(1)
	case keyIs(key, "memberlist", "pushPullNode"):
		c.pushPulls.Add(1)
	}
}

// Stats is a snapshot of one gossip instance's counters.
type Stats struct {
	Probes, Suspicions, DeadMessages, AliveMessages, PushPulls uint64
	UDPMessagesSent, UDPBytesSent, UDPBytesReceived            uint64
	TCPMessagesSent, TCPBytesSent, TCPBytesReceived            uint64
	RejectedNodes                                              uint64
	HealthScore                                                int64
	// Compact metadata: records asked of members directly, and live
	// members whose record has not arrived.
	RecordRequests uint64
	PendingMembers int
	// Copies of alive, suspect and dead messages dropped unread (gossipDedup).
	Duplicates uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Probes: c.probes.Load(), Suspicions: c.suspicions.Load(), DeadMessages: c.deadMsgs.Load(),
		AliveMessages: c.aliveMsgs.Load(), PushPulls: c.pushPulls.Load(),
		UDPMessagesSent: c.udpSentMsgs.Load(), UDPBytesSent: c.udpSent.Load(), UDPBytesReceived: c.udpRecv.Load(),
		TCPMessagesSent: c.tcpSentMsgs.Load(), TCPBytesSent: c.tcpSent.Load(), TCPBytesReceived: c.tcpRecv.Load(),
		RejectedNodes: c.rejected.Load(), HealthScore: c.health.Load(), RecordRequests: c.recordRequests.Load(),
		Duplicates: c.dupMsgs.Load(),
	}
}

// collector exports one gossip instance's metrics to Prometheus.
type collector struct {
	g *Gossip

	members, health                          *prometheus.Desc
	probes, suspicions, deadMsgs, pushPulls  *prometheus.Desc
	msgsSent, bytesSent, bytesRecv, rejected *prometheus.Desc
	recordRequests, pending, dupMsgs         *prometheus.Desc
}

// Collector returns a prometheus.Collector for this instance's gossip metrics.
func (g *Gossip) Collector() prometheus.Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("colony_gossip_"+name, help, labels, nil)
	}
	return &collector{
		g:          g,
		members:    d("members", "Members in this node's gossip view, by status.", "status"),
		health:     d("health_score", "Lifeguard local health score (0 is healthy; higher means this node is slow to answer probes)."),
		probes:     d("probes_total", "Failure-detection probes this node ran."),
		suspicions: d("suspicions_total", "Suspect messages this node processed (false positives show up here first)."),
		deadMsgs:   d("dead_messages_total", "Dead messages this node processed."),
		pushPulls:  d("push_pulls_total", "Full-state syncs this node initiated."),
		msgsSent:   d("messages_sent_total", "Gossip packets (udp) and streams (tcp) sent.", "proto"),
		bytesSent:  d("bytes_sent_total", "Gossip bytes sent.", "proto"),
		bytesRecv:  d("bytes_received_total", "Gossip bytes received.", "proto"),
		rejected:   d("rejected_nodes_total", "Alive or merge messages refused: bad metadata, duplicate node IDs or names."),
		recordRequests: d("record_requests_total",
			"Compact metadata: members this node asked for their record because it had not arrived by gossip."),
		pending: d("pending_members", "Compact metadata: live members whose record this node has not received yet (not listed until it arrives)."),
		dupMsgs: d("duplicates_dropped_total",
			"Copies of alive, suspect and dead messages this node had already received seconds before, dropped before memberlist decoded them (uncompressed, unencrypted gossip only)."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.members, c.health, c.probes, c.suspicions, c.deadMsgs, c.pushPulls, c.msgsSent, c.bytesSent, c.bytesRecv, c.rejected, c.recordRequests, c.pending, c.dupMsgs} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counts := map[Status]int{}
	for _, m := range c.g.Members() {
		counts[m.Status]++
	}
	for _, s := range []Status{StatusAlive, StatusSuspect, StatusDead, StatusLeft} {
		ch <- prometheus.MustNewConstMetric(c.members, prometheus.GaugeValue, float64(counts[s]), s.String())
	}
	st := c.g.Stats()
	ch <- prometheus.MustNewConstMetric(c.health, prometheus.GaugeValue, float64(st.HealthScore))
	ch <- prometheus.MustNewConstMetric(c.probes, prometheus.CounterValue, float64(st.Probes))
	ch <- prometheus.MustNewConstMetric(c.suspicions, prometheus.CounterValue, float64(st.Suspicions))
	ch <- prometheus.MustNewConstMetric(c.deadMsgs, prometheus.CounterValue, float64(st.DeadMessages))
	ch <- prometheus.MustNewConstMetric(c.pushPulls, prometheus.CounterValue, float64(st.PushPulls))
	ch <- prometheus.MustNewConstMetric(c.msgsSent, prometheus.CounterValue, float64(st.UDPMessagesSent), "udp")
	ch <- prometheus.MustNewConstMetric(c.msgsSent, prometheus.CounterValue, float64(st.TCPMessagesSent), "tcp")
	ch <- prometheus.MustNewConstMetric(c.bytesSent, prometheus.CounterValue, float64(st.UDPBytesSent), "udp")
	ch <- prometheus.MustNewConstMetric(c.bytesSent, prometheus.CounterValue, float64(st.TCPBytesSent), "tcp")
	ch <- prometheus.MustNewConstMetric(c.bytesRecv, prometheus.CounterValue, float64(st.UDPBytesReceived), "udp")
	ch <- prometheus.MustNewConstMetric(c.bytesRecv, prometheus.CounterValue, float64(st.TCPBytesReceived), "tcp")
	ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.CounterValue, float64(st.RejectedNodes))
	ch <- prometheus.MustNewConstMetric(c.recordRequests, prometheus.CounterValue, float64(st.RecordRequests))
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(st.PendingMembers))
	ch <- prometheus.MustNewConstMetric(c.dupMsgs, prometheus.CounterValue, float64(st.Duplicates))
}

// Instrument routes the metrics of a memberlist that Colony does not wrap
// (the scale harness runs bare memberlist beside Colony) to counters like
// Gossip.Stats. Call it before memberlist.Create; release drops the route.
func Instrument(mc *memberlist.Config) (stats func() Stats, release func()) {
	token, c := newRoute()
	mc.MetricLabels = append(mc.MetricLabels, gometrics.Label{Name: routeLabel, Value: token})
	return c.snapshot, func() { dropRoute(token) }
}
