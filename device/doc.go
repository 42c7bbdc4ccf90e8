// Package device is the intercom itself: it ties the doorbell button, the
// call engine, the ringer and the relay together, and serves the local HTTP
// API (health, status, events, simulated button) behind its guard (Host,
// Origin, token, ring rate).
package device
