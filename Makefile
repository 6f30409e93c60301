# keytrustee — top-level build.
#
#   make            build the programs into build/bin
#   make SAN=1      the same with AddressSanitizer + UBSan, into build/asan/bin
#   make test       install what is missing, build both, run every test (ends "N passed, N failed")
#   make run        install, build, start an active/passive pair on loopback with a demo org
#   make install    DESTDIR=... PREFIX=/usr
#
# Dependencies come from Debian 12 packages (scripts/install-deps.sh); CivetWeb is compiled from
# Debian's civetweb source package with USE_MBEDTLS (scripts/fetch-civetweb.sh). Nothing third-party
# is committed.

CC       ?= gcc
PREFIX   ?= /usr
DESTDIR  ?=
BUILD    ?= build
SAN      ?= 0
VERSION  := 0.1.0

ifeq ($(SAN),1)
OUT      := $(BUILD)/asan
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
OPT      := -O1
else
OUT      := $(BUILD)
SANFLAGS :=
OPT      := -O2
endif

THIRD_PARTY := $(BUILD)/third_party
CIVETWEB    := $(THIRD_PARTY)/civetweb

WARNINGS := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wvla -Wstrict-prototypes -Wmissing-prototypes
CPPFLAGS += -I. -D_GNU_SOURCE -DKT_VERSION='"$(VERSION)"'
CFLAGS   += -std=c17 $(OPT) -g $(WARNINGS) $(SANFLAGS) -fstack-protector-strong -D_FORTIFY_SOURCE=2
LDFLAGS  += $(SANFLAGS) -pthread
LDLIBS   := -ljansson -lmbedtls -lmbedx509 -lmbedcrypto -lsodium -lsqlite3 -lpthread -lm

# Our libraries, one per folder, linked highest layer first.
CRYPTO_SRC  := $(sort $(wildcard crypto/*.c))
STORAGE_SRC := $(sort $(wildcard storage/*.c))
REPL_SRC    := $(sort $(wildcard replication/*.c))
COMMON_SRC  := $(sort $(wildcard app/common/*.c))
CLIENTLIB_SRC := $(filter-out app/ktclient/main.c,$(sort $(wildcard app/ktclient/*.c)))

obj = $(patsubst %.c,$(OUT)/obj/%.o,$(1))

LIB_CRYPTO  := $(OUT)/lib/libktcrypto.a
LIB_STORAGE := $(OUT)/lib/libktstorage.a
LIB_REPL    := $(OUT)/lib/libktreplication.a
LIB_COMMON  := $(OUT)/lib/libktcommon.a
LIB_CLIENT  := $(OUT)/lib/libktclient.a
OUR_LIBS    := $(LIB_CLIENT) $(LIB_COMMON) $(LIB_REPL) $(LIB_STORAGE) $(LIB_CRYPTO)

CIVETWEB_OBJ := $(OUT)/obj/third_party/civetweb.o
# The same defines for civetweb.c and every file that includes civetweb.h: some change struct layouts.
CIVETWEB_DEFINES := -DUSE_MBEDTLS -DUSE_IPV6 -DNO_CGI -DNO_FILES -DNO_CACHING -DMG_EXPERIMENTAL_INTERFACES

PROGRAMS := keytrusteed keytrustee-db ktadmin keytrustee-orgtool ktclient
BINS     := $(addprefix $(OUT)/bin/,$(PROGRAMS))

UNIT_SRC   := $(sort $(wildcard tests/unit/test_*.c))
UNIT_TESTS := $(patsubst tests/unit/%.c,$(OUT)/tests/%,$(UNIT_SRC))
TEST_HELPER_SRC := $(sort $(wildcard tests/tools/*.c))
TEST_HELPERS := $(patsubst tests/tools/%.c,$(OUT)/tests/%,$(TEST_HELPER_SRC))

.PHONY: all tests deps civetweb test run stop install clean check-long bench lint
.DEFAULT_GOAL := all

all: $(BINS)

tests: $(UNIT_TESTS) $(TEST_HELPERS)

deps:
	@scripts/install-deps.sh

# Fetched again when our patches change (scripts/patches/, applied by the fetch script).
$(CIVETWEB)/src/civetweb.c: scripts/fetch-civetweb.sh $(wildcard scripts/patches/*.patch)
	@scripts/fetch-civetweb.sh $(THIRD_PARTY)

civetweb: $(CIVETWEB_OBJ)

# CivetWeb is third-party code: compiled without our -Werror (it carries a deprecation #warning and
# unused parameters), with the same sanitizers as the rest so ASan sees the whole process.
$(CIVETWEB_OBJ): $(CIVETWEB)/src/civetweb.c
	@mkdir -p $(dir $@)
	$(CC) $(OPT) -g $(SANFLAGS) -c -I$(CIVETWEB)/include $(CIVETWEB_DEFINES) -w $< -o $@

$(OUT)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

# keytrusteed includes civetweb.h, which exists only after the fetch.
$(OUT)/obj/app/keytrusteed/%.o: app/keytrusteed/%.c | $(CIVETWEB)/src/civetweb.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -isystem $(CIVETWEB)/include $(CIVETWEB_DEFINES) $(CFLAGS) -MMD -MP -c $< -o $@

$(LIB_CRYPTO):  $(call obj,$(CRYPTO_SRC))
$(LIB_STORAGE): $(call obj,$(STORAGE_SRC))
$(LIB_REPL):    $(call obj,$(REPL_SRC))
$(LIB_COMMON):  $(call obj,$(COMMON_SRC))
$(LIB_CLIENT):  $(call obj,$(CLIENTLIB_SRC))
$(OUR_LIBS):
	@mkdir -p $(dir $@)
	@rm -f $@
	ar rcs $@ $^

$(OUT)/bin/keytrusteed: $(call obj,$(sort $(wildcard app/keytrusteed/*.c))) $(CIVETWEB_OBJ) $(OUR_LIBS)
$(OUT)/bin/keytrustee-db: $(call obj,$(sort $(wildcard app/keytrustee-db/*.c))) $(OUR_LIBS)
$(OUT)/bin/ktadmin: $(call obj,$(sort $(wildcard app/ktadmin/*.c))) $(OUR_LIBS)
$(OUT)/bin/keytrustee-orgtool: $(call obj,$(sort $(wildcard app/orgtool/*.c))) $(OUR_LIBS)
$(OUT)/bin/ktclient: $(call obj,app/ktclient/main.c) $(OUR_LIBS)
$(BINS):
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(OUR_LIBS) $(LDLIBS)

$(OUT)/tests/%: tests/unit/%.c $(OUR_LIBS)
	@mkdir -p $(dir $@) $(dir $(OUT)/obj/tests/unit/$*)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -MF $(OUT)/obj/tests/unit/$*.d -o $@ $< $(LDFLAGS) $(OUR_LIBS) $(LDLIBS)

# test_tls_reload drives the patched CivetWeb itself (mg_tls_reload): it links civetweb.o too.
$(OUT)/tests/test_tls_reload: tests/unit/test_tls_reload.c $(CIVETWEB_OBJ) $(OUR_LIBS)
	@mkdir -p $(dir $@) $(OUT)/obj/tests/unit
	$(CC) $(CPPFLAGS) -isystem $(CIVETWEB)/include $(CIVETWEB_DEFINES) $(CFLAGS) -MMD -MP -MF $(OUT)/obj/tests/unit/test_tls_reload.d -o $@ $< $(CIVETWEB_OBJ) $(LDFLAGS) $(OUR_LIBS) $(LDLIBS)

# test_nonce_cache tests keytrusteed's replay cache alone: its object, and civetweb.h for the header.
$(OUT)/tests/test_nonce_cache: tests/unit/test_nonce_cache.c $(OUT)/obj/app/keytrusteed/nonce_cache.o $(OUR_LIBS)
	@mkdir -p $(dir $@) $(OUT)/obj/tests/unit
	$(CC) $(CPPFLAGS) -isystem $(CIVETWEB)/include $(CIVETWEB_DEFINES) $(CFLAGS) -MMD -MP -MF $(OUT)/obj/tests/unit/test_nonce_cache.d -o $@ $< $(OUT)/obj/app/keytrusteed/nonce_cache.o $(LDFLAGS) $(OUR_LIBS) $(LDLIBS)

$(OUT)/tests/%: tests/tools/%.c $(OUR_LIBS)
	@mkdir -p $(dir $@) $(OUT)/obj/tests/tools
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -MF $(OUT)/obj/tests/tools/$*.d -o $@ $< $(LDFLAGS) $(OUR_LIBS) $(LDLIBS)

# Layering rule: lower folders never include from app/; crypto/ includes nothing of ours.
lint:
	@! grep -n '#include "app/' crypto/*.[ch] storage/*.[ch] replication/*.[ch] 2>/dev/null
	@! grep -n '#include "\(storage\|replication\)/' crypto/*.[ch] 2>/dev/null
	@echo "lint: layering ok"

test: deps
	$(MAKE) lint
	$(MAKE) all tests
	$(MAKE) SAN=1 all tests
	tests/run.sh

run: deps all
	scripts/run-pair.sh

stop:
	scripts/run-pair.sh --stop

check-long: deps
	$(MAKE) SAN=1 all tests
	$(MAKE) all tests # test_valgrind.sh runs the normal build under valgrind; test_repl_faults.sh its repl_node as a client
	KT_LONG=1 tests/run.sh
	$(MAKE) fuzz-long FUZZ_JOBS=2 # issue 7: every fuzz target for FUZZ_LONG_SECONDS (>= 10 min)

bench: deps all tests
	bench/run.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/sbin
	install -m 0755 $(OUT)/bin/ktclient $(DESTDIR)$(PREFIX)/bin/ktclient
	install -m 0755 $(OUT)/bin/keytrusteed $(OUT)/bin/keytrustee-db $(OUT)/bin/ktadmin \
	  $(OUT)/bin/keytrustee-orgtool $(DESTDIR)$(PREFIX)/sbin/
	install -m 0755 scripts/ktbackup.sh $(DESTDIR)$(PREFIX)/sbin/ktbackup.sh

clean:
	rm -rf $(BUILD)/bin $(BUILD)/lib $(BUILD)/obj $(BUILD)/tests $(BUILD)/asan

# ---- bench tools ----------------------------------------------------------------------------------
# bench/tools/*.c -> build/bench/bin/ (one program per file), for bench/run.sh. Linked against our
# libraries so a benchmark backend can use storage/ or app/common directly. `make bench-tools`
# builds them alone; `make bench` builds them before running bench/run.sh.
BENCH_BIN       := $(BUILD)/bench/bin
BENCH_TOOL_SRC  := $(sort $(wildcard bench/tools/*.c))
BENCH_TOOLS     := $(patsubst bench/tools/%.c,$(BENCH_BIN)/%,$(BENCH_TOOL_SRC))

.PHONY: bench-tools
bench-tools: $(BENCH_TOOLS)
bench: bench-tools

$(BENCH_BIN)/%: bench/tools/%.c $(OUR_LIBS)
	@mkdir -p $(dir $@) $(BUILD)/bench/obj
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -MF $(BUILD)/bench/obj/$*.d -o $@ $< $(LDFLAGS) $(OUR_LIBS) $(LDLIBS)

-include $(wildcard $(BUILD)/bench/obj/*.d)
# ---- end of bench tools ---------------------------------------------------------------------------

-include $(shell find $(OUT)/obj -name '*.d' 2>/dev/null)

# ---- fuzzing --------------------------------------------------------------------------------------
# libFuzzer targets tests/fuzz/fuzz_NAME.c, built with clang under ASan + UBSan (our libraries are
# rebuilt with coverage instrumentation into build/fuzz/), each with its seed corpus in
# tests/fuzz/corpus/NAME/ (tests/fuzz/run.sh says how they are run).
#   make fuzz-build     build every target into build/fuzz/bin
#   make fuzz           run each target for FUZZ_SECONDS (default 60), FUZZ_JOBS at a time; new
#                       inputs go to build/fuzz/corpus/NAME, crashes to build/fuzz/crashes/NAME
#   make fuzz-regress   run each target once over its committed corpus (make test does this)
#   make fuzz-long      make fuzz with FUZZ_LONG_SECONDS (600) per target, for check-long
# FUZZ_TARGETS=api,wire limits any of them to those targets.
FUZZ_CC           ?= clang
FUZZ_SECONDS      ?= 60
FUZZ_LONG_SECONDS ?= 600
FUZZ_JOBS         ?= 1
FUZZ_OUT          := $(BUILD)/fuzz
FUZZ_SAN          := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS       := -std=c17 -O1 -g $(WARNINGS) $(FUZZ_SAN) -fsanitize=fuzzer-no-link
FUZZ_CPPFLAGS     := $(CPPFLAGS) -isystem $(CIVETWEB)/include $(CIVETWEB_DEFINES)
FUZZ_LDFLAGS      := $(FUZZ_SAN) -fsanitize=fuzzer -pthread

FUZZ_NAMES := $(sort $(patsubst tests/fuzz/fuzz_%.c,%,$(filter-out tests/fuzz/fuzz_support.c,\
                $(wildcard tests/fuzz/fuzz_*.c))))
FUZZ_BINS  := $(addprefix $(FUZZ_OUT)/bin/fuzz_,$(FUZZ_NAMES))
FUZZ_LIB   := $(FUZZ_OUT)/lib/libktfuzz.a
fuzz_obj    = $(patsubst %.c,$(FUZZ_OUT)/obj/%.o,$(1))

# keytrusteed without main, the CivetWeb server and TLS files: request handling over the fake
# CivetWeb of tests/fuzz/fake_civetweb.c. keytrustee-db: the op handlers and their validation
# (the writer thread and replication glue are stubbed in the target).
FUZZ_KTD_SRC := $(filter-out app/keytrusteed/main.c app/keytrusteed/server.c \
                  app/keytrusteed/tls.c,\
                  $(sort $(wildcard app/keytrusteed/*.c)))
FUZZ_KTDB_OPS_SRC := app/keytrustee-db/operations.c app/keytrustee-db/request_fields.c \
                     app/keytrustee-db/responses.c app/keytrustee-db/settings.c \
                     app/keytrustee-db/audit.c

FUZZ_EXTRA_api      := tests/fuzz/fake_civetweb.c $(FUZZ_KTD_SRC)
FUZZ_EXTRA_query    := app/keytrusteed/query.c
FUZZ_EXTRA_db_ops   := $(FUZZ_KTDB_OPS_SRC)
FUZZ_EXTRA_config   := app/keytrustee-db/settings.c

.PHONY: fuzz fuzz-build fuzz-regress fuzz-long
fuzz-build: $(FUZZ_BINS)

# tests/run.sh runs every target over its corpus, so the suites need the targets built (after
# deps: clang comes from scripts/install-deps.sh).
test check-long: fuzz-build

fuzz: fuzz-build
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_JOBS=$(FUZZ_JOBS) tests/fuzz/run.sh fuzz

fuzz-long: fuzz-build
	FUZZ_SECONDS=$(FUZZ_LONG_SECONDS) FUZZ_JOBS=$(FUZZ_JOBS) tests/fuzz/run.sh fuzz

fuzz-regress: fuzz-build
	tests/fuzz/run.sh regress

# Keeps build/fuzz/corpus (inputs found by fuzzing) and build/fuzz/crashes.
.PHONY: fuzz-clean
fuzz-clean:
	rm -rf $(FUZZ_OUT)/bin $(FUZZ_OUT)/lib $(FUZZ_OUT)/obj $(FUZZ_OUT)/logs
clean: fuzz-clean

# Every fuzz object may include civetweb.h (the fake CivetWeb and keytrusteed's files do).
$(FUZZ_OUT)/obj/%.o: %.c | deps $(CIVETWEB)/src/civetweb.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CPPFLAGS) $(FUZZ_CFLAGS) -MMD -MP -c $< -o $@

$(FUZZ_LIB): $(call fuzz_obj,$(CRYPTO_SRC) $(STORAGE_SRC) $(REPL_SRC) $(COMMON_SRC) $(CLIENTLIB_SRC))
	@mkdir -p $(dir $@)
	@rm -f $@
	ar rcs $@ $^

.SECONDEXPANSION:
$(FUZZ_OUT)/bin/fuzz_%: $(FUZZ_OUT)/obj/tests/fuzz/fuzz_%.o $(FUZZ_OUT)/obj/tests/fuzz/fuzz_support.o \
                        $$(call fuzz_obj,$$(FUZZ_EXTRA_$$*)) $(FUZZ_LIB)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_LDFLAGS) -o $@ $(filter %.o,$^) $(FUZZ_LIB) $(LDLIBS)

-include $(shell find $(FUZZ_OUT)/obj -name '*.d' 2>/dev/null)
# ---- end of fuzzing -------------------------------------------------------------------------------

# ---- appliance image (image/, docs/appliance.md) --------------------------------------------------
#   make image     build/image/vmlinuz + build/image/initrd.img: Debian's cloud kernel, busybox,
#                  dropbear, rsync and our programs from build/bin (never the ASan build)
#   make vm-pair   boot two fresh appliance VMs, keytrustee01 and keytrustee02, under qemu;
#                  writes build/vm/pair.env (ports, SSH key) and prints how to reach them
#   make vm-stop   power both off cleanly
# Our programs go in dynamically linked, with the shared libraries ldd lists: the image needs glibc
# anyway (dropbear, rsync), so one copy of sqlite/mbedTLS/libsodium beats four static ones.
IMAGE_OUT      := $(abspath $(BUILD)/image)
VM_DIR         := $(abspath $(BUILD)/vm)
IMAGE_INPUTS   := image/build.sh image/packages.txt $(shell find image/rootfs -type f 2>/dev/null)
IMAGE_PROGRAMS := $(addprefix $(BUILD)/bin/,keytrusteed keytrustee-db ktadmin keytrustee-orgtool)

.PHONY: image vm-pair vm-stop
image:
	@$(MAKE) --no-print-directory SAN=0 all
	@$(MAKE) --no-print-directory SAN=0 $(IMAGE_OUT)/initrd.img

$(IMAGE_OUT)/initrd.img: $(IMAGE_INPUTS) $(IMAGE_PROGRAMS)
	image/build.sh $(BUILD)/bin $(IMAGE_OUT)

vm-pair: image
	KT_VM_DIR=$(VM_DIR) KT_IMAGE_DIR=$(IMAGE_OUT) image/vm.sh pair

vm-stop:
	KT_VM_DIR=$(VM_DIR) KT_IMAGE_DIR=$(IMAGE_OUT) image/vm.sh stop
# ---- end of appliance image -----------------------------------------------------------------------
