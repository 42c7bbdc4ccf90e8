// Package systemd holds the intercom's systemd unit, its sysusers.d and
// tmpfiles.d entries and the udev rule for the GPIO chips. It has no code:
// its tests check the files with systemd's own tools.
package systemd
