# lxcforge: golden LXC templates for Proxmox VE.
#
#   make image.build-next [IMAGE=ubuntu-24.04]   build the next version of an image
#   make image.build VERSION=N [IMAGE=…]         build exactly version N
#   make image.list [IMAGE=…]                    versions, uploads and the Terraform pin
#   make image.promote IMAGE=… VERSION=N STORAGE=…   pin vN in versions/<IMAGE>.auto.tfvars.json
#   make image.upload [IMAGE=…|FILE=…]           upload the newest artifact (or FILE) to Proxmox
#   make image.build-upload [IMAGE=…]            build the next version, then upload it
#   make base.debian-12                          debootstrap the offline Debian 12 base
#   make test                                    the whole test suite (needs root, Docker, LXC)
#   make reliability                             run the fault tests, regenerate docs/reliability.md
#   make soak [SOAK_CYCLES=50] [SOAK_SEED=…]     build+upload cycles with random faults, then the state checked

IMAGE   ?= ubuntu-24.04
VERSION ?=
STORAGE ?=
OUT     ?= artifacts
CARGO   ?= cargo
LXCFORGE_FLAGS ?=
LXCFORGE := target/release/lxcforge
SOURCES := Cargo.toml $(wildcard Cargo.lock) $(shell find src -name '*.rs' 2>/dev/null)

.PHONY: reliability soak fuzz all image.build-next image.build image.list image.promote image.upload image.build-upload images deps.build deps.test test test.unit lint completions clean.artifacts

all: $(LXCFORGE)

$(LXCFORGE): $(SOURCES)
	$(CARGO) build --release
	@touch $@

deps.build:
	@sh scripts/ensure-deps.sh build

deps.test:
	@sh scripts/ensure-deps.sh test

# The offline base for images/debian-12.toml: debootstrap --variant=minbase from Debian's mirror.
base.debian-12: bases/debian-12-minbase.tar.gz
bases/debian-12-minbase.tar.gz: scripts/make-base-debian.sh | deps.build
	sh scripts/make-base-debian.sh bookworm $@

# Images whose base is pulled by digest need no local base.
base.%:
	@:

image.build-next: deps.build $(LXCFORGE) base.$(IMAGE)
	$(LXCFORGE) build $(IMAGE) --next --out-dir $(OUT) $(LXCFORGE_FLAGS)

image.build: deps.build $(LXCFORGE) base.$(IMAGE)
	@test -n "$(VERSION)" || { echo "usage: make image.build VERSION=N [IMAGE=$(IMAGE)]" >&2; exit 2; }
	$(LXCFORGE) build $(IMAGE) --version $(VERSION) --out-dir $(OUT) $(LXCFORGE_FLAGS)

# Without IMAGE on the command line (or in the environment): every image.
image.list: $(LXCFORGE)
	$(LXCFORGE) list $(if $(filter file,$(origin IMAGE)),,$(IMAGE)) --out-dir $(OUT) $(LXCFORGE_FLAGS)

image.promote: $(LXCFORGE)
	@test -n "$(VERSION)" -a -n "$(STORAGE)" || { echo "usage: make image.promote IMAGE=$(IMAGE) VERSION=N STORAGE=<proxmox storage>" >&2; exit 2; }
	$(LXCFORGE) promote $(IMAGE) $(VERSION) --storage $(STORAGE) $(LXCFORGE_FLAGS)
# Proxmox settings come from the environment (PM_API_URL, PM_API_TOKEN_ID, PM_API_TOKEN_SECRET,
# PM_NODE, PM_STORAGE, or PROXMOX_VE_ENDPOINT/PROXMOX_VE_API_TOKEN); nothing secret is put on a
# command line. UPLOAD_FLAGS passes more, e.g. UPLOAD_FLAGS="--node pve1,pve2 --ca-cert pve-root-ca.pem".
UPLOAD_FLAGS ?=
image.upload: $(LXCFORGE)
	$(LXCFORGE) upload $(if $(FILE),$(FILE),--image $(IMAGE) --out-dir $(OUT)) $(UPLOAD_FLAGS)

image.build-upload: image.build-next
	$(LXCFORGE) upload --image $(IMAGE) --out-dir $(OUT) $(UPLOAD_FLAGS)

images: $(LXCFORGE)
	$(LXCFORGE) images

# The full suite: unit tests, then integration tests against the real Docker Engine, a real
# local registry and real LXC. Under CI=true a missing component fails instead of skipping.
test: deps.test base.debian-12
	$(CARGO) build --release
	$(CARGO) test --release --workspace -- --test-threads=2

# The fault matrix: every test that records faults, rendered into docs/reliability.md.
reliability: deps.test
	sh scripts/reliability-report.sh docs/reliability.md

test.unit:
	$(CARGO) test --lib --bins

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

completions: $(LXCFORGE)
	$(LXCFORGE) completions bash > target/lxcforge.bash

# Bounded fuzzing of the tar reader/normalizer, the validator and the definition parser.
fuzz:
	sh scripts/fuzz.sh $(or $(FUZZ_SECONDS),60)

# The soak: SOAK_CYCLES build+upload cycles of a tiny image with random faults (tests/soak.rs);
# SOAK_SEED replays a run (the seed is printed).
SOAK_CYCLES ?= 50
SOAK_SEED ?=
soak: deps.test
	LXCFORGE_SOAK_CYCLES=$(SOAK_CYCLES) $(if $(SOAK_SEED),LXCFORGE_SOAK_SEED=$(SOAK_SEED)) CI=true $(CARGO) test --release --test soak -- --nocapture
