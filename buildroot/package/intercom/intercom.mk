################################################################################
#
# intercom
#
################################################################################

# The source is this checkout (the directory above the BR2_EXTERNAL tree),
# copied with rsync: no download, no tarball, no hash.
INTERCOM_SITE = $(BR2_EXTERNAL_INTERCOM_PATH)/..
INTERCOM_SITE_METHOD = local
INTERCOM_VERSION = $(shell git -C $(INTERCOM_SITE) describe --always --dirty 2>/dev/null || echo local)
# INTERCOM_LICENSE: set once the project declares its licence (the
# checkout has no LICENSE file yet).
INTERCOM_GOMOD = github.com/doorbell/intercom
INTERCOM_BUILD_TARGETS = cmd/intercom
INTERCOM_LDFLAGS = -s -w -X main.version=$(INTERCOM_VERSION)
# mautrix's pure-Go Olm (goolm): no libolm on the board; media/aec without
# WebRTC's canceller (noaecwebrtc): the door runs speexdsp.
INTERCOM_TAGS = goolm noaecwebrtc
INTERCOM_DEPENDENCIES = libvpx opus alsa-lib speexdsp
# Build outputs, the demo's homeserver data and the browser harness's npm
# packages are not source: keep them out of the copy.
INTERCOM_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude /bin --exclude /demo-state --exclude node_modules --exclude /dist

# Buildroot vendors a Go package's modules when it downloads it (the "go"
# download post-process runs `go mod vendor`); a local package is rsynced,
# not downloaded, so it arrives without vendor/ and the build (GOFLAGS
# -mod=vendor, GOPROXY=off) would fail. Vendor it here instead, unless the
# checkout already carries vendor/ (run `go mod vendor` there for an
# offline build). This step needs the module proxy; INTERCOM_GOPROXY
# overrides it.
INTERCOM_GOPROXY ?= https://proxy.golang.org,direct
define INTERCOM_GO_VENDOR
	if [ ! -f $(@D)/vendor/modules.txt ]; then \
		cd $(@D) && $(HOST_GO_HOST_ENV) GOFLAGS=-mod=mod \
			GOPROXY=$(INTERCOM_GOPROXY) $(GO_BIN) mod vendor; \
	fi
endef
INTERCOM_PRE_BUILD_HOOKS += INTERCOM_GO_VENDOR

# The unit, its user and directories, and the GPIO chips' group, from the
# checkout's systemd/ directory: the same files the tests verify.
define INTERCOM_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/systemd/intercom.service \
		$(TARGET_DIR)/usr/lib/systemd/system/intercom.service
	$(INSTALL) -D -m 0644 $(@D)/systemd/intercom.sysusers \
		$(TARGET_DIR)/usr/lib/sysusers.d/intercom.conf
	$(INSTALL) -D -m 0644 $(@D)/systemd/intercom.tmpfiles \
		$(TARGET_DIR)/usr/lib/tmpfiles.d/intercom.conf
	$(INSTALL) -D -m 0644 $(@D)/systemd/60-intercom-gpio.rules \
		$(TARGET_DIR)/usr/lib/udev/rules.d/60-intercom-gpio.rules
	$(INSTALL) -D -m 0644 $(BR2_EXTERNAL_INTERCOM_PATH)/package/intercom/80-intercom.preset \
		$(TARGET_DIR)/usr/lib/systemd/system-preset/80-intercom.preset
endef

# Every key of the configuration, documented, beside the board's own
# /etc/intercom/intercom.yaml (from the overlay).
define INTERCOM_INSTALL_EXAMPLE
	$(INSTALL) -D -m 0644 $(@D)/provisioning/example.yaml \
		$(TARGET_DIR)/usr/share/doc/intercom/example.yaml
endef
INTERCOM_POST_INSTALL_TARGET_HOOKS += INTERCOM_INSTALL_EXAMPLE

$(eval $(golang-package))
