// Package matrix is the intercom's adapter over mautrix-go: it logs in,
// keeps one direct room per resident, runs the /sync loop and sends call
// signalling. It is the only package of the project that imports mautrix;
// everything it hands out uses callengine's typed IDs and raw JSON.
//
// Inbound call events are delivered with their content untouched
// (json.RawMessage): the call engine decodes and validates them. Outbound
// content is marshalled once with encoding/json and sent verbatim, so
// mautrix's own VoIP structs (which may write "version" as a number, see
// shared/matrix-voip.md §1.10) never touch it.
package matrix
