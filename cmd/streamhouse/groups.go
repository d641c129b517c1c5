package main

import (
	"time"

	"github.com/spf13/pflag"

	"github.com/streamhouse/streamhouse/controller"
)

// groupConfig is the consumer group coordinator's settings, shared by the
// controller and dev commands.
type groupConfig struct {
	HeartbeatInterval   time.Duration
	SessionTimeout      time.Duration
	MaxSessionTimeout   time.Duration
	MetricsPartitionLag bool
}

func (g *groupConfig) addFlags(f *pflag.FlagSet) {
	f.DurationVar(&g.HeartbeatInterval, "group-heartbeat-interval", controller.DefaultGroupHeartbeatInterval, "how often consumer group members heartbeat")
	f.DurationVar(&g.SessionTimeout, "group-session-timeout", controller.DefaultGroupSessionTimeout, "a group member silent this long is evicted, unless it asks for another timeout (at least twice --group-heartbeat-interval)")
	f.DurationVar(&g.MaxSessionTimeout, "group-max-session-timeout", controller.DefaultGroupMaxSessionTimeout, "the longest session timeout a group member may ask for")
	f.BoolVar(&g.MetricsPartitionLag, "metrics-partition-lag", false, "export per-partition consumer group lag (streamhouse_controller_group_partition_lag_records; one series per group and partition)")
}

// apply copies the settings into a controller config (validated by the controller).
func (g *groupConfig) apply(c *controller.Config) {
	c.GroupHeartbeatInterval = g.HeartbeatInterval
	c.GroupSessionTimeout = g.SessionTimeout
	c.GroupMaxSessionTimeout = g.MaxSessionTimeout
	c.MetricsPartitionLag = g.MetricsPartitionLag
}
