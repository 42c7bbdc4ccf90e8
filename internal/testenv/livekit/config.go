package livekit

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"gopkg.in/yaml.v3"
)

// config is the part of livekit-server's YAML configuration (v1.13.5,
// pkg/config/config.go and mediatransportutil's rtcconfig.RTCConfig) that
// the harness sets. Everything else keeps the server's defaults: no Redis
// (single-node routing), no TURN, no webhooks, no Prometheus.
type config struct {
	Port          int               `yaml:"port"`
	BindAddresses []string          `yaml:"bind_addresses"`
	RTC           rtcConfig         `yaml:"rtc"`
	Keys          map[string]string `yaml:"keys"`
	Logging       loggingConfig     `yaml:"logging"`
}

type rtcConfig struct {
	// UDPPort is a single port: every peer connection shares one UDP mux
	// per listening address, so the server needs exactly one free port.
	UDPPort int `yaml:"udp_port"`
	// TCPPort is ICE over TCP (RFC 6544), the fallback when UDP is
	// blocked. v1.13.5 listens on it on every address.
	TCPPort int    `yaml:"tcp_port"`
	NodeIP  string `yaml:"node_ip"`
	// UseExternalIP false: no STUN request leaves the machine to find a
	// public address; with node_ip set, every host candidate is rewritten
	// to node_ip (a NAT 1:1 rule).
	UseExternalIP bool `yaml:"use_external_ip"`
	// EnableLoopbackCandidate makes the UDP mux listen on, and pion gather,
	// loopback addresses, which pion skips by default; without it a
	// node_ip of 127.0.0.1 has nothing to listen on.
	EnableLoopbackCandidate bool `yaml:"enable_loopback_candidate"`
	// IPs limits the addresses the UDP mux listens on and candidates are
	// gathered for, so media never uses the machine's other interfaces.
	IPs ipsConfig `yaml:"ips"`
	// STUNServers are handed to clients in the join response. Left empty,
	// v1.13.5 hands out Google's and Twilio's (RoomManager.
	// iceServersForParticipant), and every test client would send STUN
	// requests off the machine. The SFU's own media port stands in: it is
	// ours, on NodeIP, and drops a binding request that carries no ICE
	// username, so clients simply gather no server-reflexive candidate.
	STUNServers []string `yaml:"stun_servers"`
}

type ipsConfig struct {
	Includes []string `yaml:"includes"`
}

type loggingConfig struct {
	Level     string `yaml:"level"`
	PionLevel string `yaml:"pion_level"`
}

// newConfig is the configuration of a server advertising nodeIP.
func newConfig(httpPort, tcpPort, udpPort int, nodeIP, key, secret string) config {
	bind := []string{"127.0.0.1"}
	includes := []string{"127.0.0.1/32"}
	if nodeIP != "127.0.0.1" {
		bind = append(bind, nodeIP)
		includes = []string{hostCIDR(nodeIP)}
	}
	return config{
		Port:          httpPort,
		BindAddresses: bind,
		RTC: rtcConfig{
			UDPPort:                 udpPort,
			TCPPort:                 tcpPort,
			NodeIP:                  nodeIP,
			UseExternalIP:           false,
			EnableLoopbackCandidate: true,
			IPs:                     ipsConfig{Includes: includes},
			STUNServers:             []string{net.JoinHostPort(nodeIP, strconv.Itoa(udpPort))},
		},
		Keys:    map[string]string{key: secret},
		Logging: loggingConfig{Level: "info", PionLevel: "error"},
	}
}

// hostCIDR is the single-address network of ip.
func hostCIDR(ip string) string {
	if net.ParseIP(ip).To4() != nil {
		return ip + "/32"
	}
	return ip + "/128"
}

// writeConfig writes c as dir/livekit.yaml, readable by its owner only (it
// holds the API secret).
func writeConfig(c config, dir string) (string, error) {
	b, err := yaml.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("encode livekit config: %w", err)
	}
	path := filepath.Join(dir, configFile)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return "", fmt.Errorf("write livekit config: %w", err)
	}
	return path, nil
}

const (
	configFile = "livekit.yaml"
	logFile    = "livekit.log"
)
