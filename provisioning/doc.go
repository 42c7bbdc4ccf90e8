// Package provisioning reads the intercom's one configuration file and keeps
// its state directory.
//
// The configuration is YAML, decoded through yaml.v3's Node API rather than
// into tagged structs so that every problem can name the file and line it
// comes from, and so that all problems are reported at once: an installer
// editing the file on a device over a serial console should not have to
// restart the service once per typo. The keys, their types, validators and
// defaults live in one table (schema.go); adding a key is one line there, one
// field in Config and one documented entry in example.yaml.
//
// The state directory holds what the intercom learns at run time: the access
// token from its one password login, the sync position and the direct rooms
// it shares with residents, so that a restart resumes instead of starting
// over.
package provisioning
