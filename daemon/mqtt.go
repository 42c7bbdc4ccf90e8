package daemon

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/doorbell/intercom/device"
	"github.com/doorbell/intercom/device/mqtt"
	"github.com/doorbell/intercom/provisioning"
)

// homeMQTT is the MQTT publisher (device/mqtt) when mqtt.broker is set:
// it follows the door's events beside the metrics, reports in
// /api/status's mqtt section and counts in /metrics. A nil *homeMQTT is
// MQTT off, and every method is a no-op on it.
type homeMQTT struct {
	pub *mqtt.Publisher
}

// newHomeMQTT builds the publisher from the configuration; status is the
// door's status document, read when the publisher starts. MQTT is read at
// start only: a reload logs a change to it as needing a restart.
func newHomeMQTT(cfg *provisioning.Config, version string, status func() device.Status, log *slog.Logger) (*homeMQTT, error) {
	if !cfg.MQTT.Enabled() {
		return nil, nil
	}
	discovery := ""
	if cfg.MQTT.Discovery {
		discovery = cfg.MQTT.DiscoveryPrefix
	}
	pub, err := mqtt.New(mqtt.Config{
		Broker: cfg.MQTT.Broker, Username: cfg.MQTT.Username, Password: cfg.MQTT.Password, CAFile: cfg.MQTT.CAFile,
		ClientID: cfg.MQTTClientID(), Prefix: cfg.MQTTTopicPrefix(), Node: cfg.MQTTSlug(),
		DiscoveryPrefix: discovery, Device: mqtt.DeviceInfo{Name: cfg.Matrix.DeviceName, Version: version},
		Status: status, Logger: log.With("component", "mqtt"),
	})
	if err != nil {
		return nil, err
	}
	return &homeMQTT{pub: pub}, nil
}

// observe is the door's event hook: the metrics', then the publisher's
// (which only queues).
func (h *homeMQTT) observe(next func(device.Event)) func(device.Event) {
	if h == nil {
		return next
	}
	return func(ev device.Event) {
		next(ev)
		h.pub.Observe(ev)
	}
}

// reporter is the status section; nil (no section) with MQTT off.
func (h *homeMQTT) reporter() device.Reporter {
	if h == nil {
		return nil
	}
	return h.pub
}

// register adds the publisher's counters to the metrics' registry.
func (h *homeMQTT) register(m *metrics) {
	if h == nil {
		return
	}
	m.reg.MustRegister(mqttCollector{h.pub})
}

// run publishes until ctx ends.
func (h *homeMQTT) run(ctx context.Context) error {
	if h == nil {
		return nil
	}
	return h.pub.Run(ctx)
}

var (
	mqttPublishedDesc = prometheus.NewDesc("intercom_mqtt_published_total",
		"MQTT messages the broker acknowledged (events, state and discovery).", nil, nil)
	mqttDroppedDesc = prometheus.NewDesc("intercom_mqtt_dropped_total",
		"MQTT messages dropped: queue_full (the broker away too long), stale (an event older than a minute when the broker came back), refused (by the broker).",
		[]string{"reason"}, nil)
	mqttConnectedDesc = prometheus.NewDesc("intercom_mqtt_connected",
		"1 while the intercom is connected to its MQTT broker.", nil, nil)
)

// mqttCollector reads the publisher's counters at each scrape.
type mqttCollector struct{ pub *mqtt.Publisher }

func (c mqttCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- mqttPublishedDesc
	ch <- mqttDroppedDesc
	ch <- mqttConnectedDesc
}

func (c mqttCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.pub.Status()
	ch <- prometheus.MustNewConstMetric(mqttPublishedDesc, prometheus.CounterValue, float64(st.Published))
	for _, r := range mqtt.DropReasons {
		ch <- prometheus.MustNewConstMetric(mqttDroppedDesc, prometheus.CounterValue, float64(st.Dropped[r]), r)
	}
	connected := 0.0
	if st.Connected {
		connected = 1
	}
	ch <- prometheus.MustNewConstMetric(mqttConnectedDesc, prometheus.GaugeValue, connected)
}
