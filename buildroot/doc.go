// Package buildroot is a BR2_EXTERNAL tree that builds the intercom into
// Raspberry Pi images with Buildroot. It has no Go code: its test checks
// the tree's structure without Buildroot being present.
package buildroot
