// Package systemd holds the intercom's systemd unit, its sysusers.d and
// tmpfiles.d entries and the udev rule for the GPIO chips, and beside the
// unit the code that speaks to it: the sd_notify Supervisor (READY=1, the
// watchdog pings that Type=notify and WatchdogSec= in intercom.service
// expect, STOPPING=1). The Supervisor imports no other package of the
// project: the daemon hands it readiness, the status line and its loop
// probes as functions. The tests check the files with systemd's own tools
// and the Supervisor over a fake NOTIFY_SOCKET (sdnotifytest).
package systemd
