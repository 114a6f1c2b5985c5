# iq_fdw: Kafka stream state as PostgreSQL foreign tables (PGXS build)

MODULE_big = iq_fdw
EXTENSION = iq_fdw
DATA = iq_fdw--0.1.sql iq_fdw--0.1--0.2.sql iq_fdw--0.2.sql iq_fdw--0.2--0.3.sql iq_fdw--0.3.sql \
	iq_fdw--0.3--0.4.sql iq_fdw--0.4.sql iq_fdw--0.4--0.5.sql iq_fdw--0.5.sql
PGFILEDESC = "iq_fdw - queryable Kafka stream state"

# common/: what backends and the worker both use; src/: the foreign data
# wrapper; worker/: the stream worker, a folder per subsystem
COMMON_C = $(wildcard common/*.c)
SRC_C = $(wildcard src/*.c)
WORKER_C = $(wildcard worker/*.c worker/*/*.c worker/*/*/*.c)
OBJS = iq_fdw.o $(COMMON_C:.c=.o) $(SRC_C:.c=.o) $(WORKER_C:.c=.o)

REGRESS = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --inputdir=. --load-extension=iq_fdw

# every project header is included with its folder ("common/wire.h")
PG_CPPFLAGS = -I$(srcdir)
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter -pthread
# warnings fail our own builds and CI (scripts/ pass WERROR=1), not a
# packager's build on a compiler we never tried
ifeq ($(WERROR),1)
PG_CFLAGS += -Werror
endif
# PGXS has no header dependencies: without these, a changed struct in a
# header leaves objects built against the old layout
PG_CFLAGS += -MMD -MP
SHLIB_LINK = -lrdkafka -lrocksdb -lcurl -lmicrohttpd -lgnutls -ljansson -lz -lpthread

# make SANITIZE=1: the module built with AddressSanitizer and
# UndefinedBehaviorSanitizer (a server must then run with libasan preloaded:
# scripts/test --asan does it all; see the README, "Running the tests")
SANITIZE ?= 0
ifeq ($(SANITIZE),1)
PG_CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer
SHLIB_LINK += -fsanitize=address,undefined
endif

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

DEPS = $(OBJS:.o=.d)
EXTRA_CLEAN = $(DEPS) .build-flags fuzz/bin asan_preload.so
-include $(DEPS)
$(DEPS): ;

# objects are rebuilt when the sanitizer flag or the PostgreSQL major version
# changes, so a plain build never links objects left by a sanitizer build (or
# the other way round), nor the tree's build for the host objects built in a
# root of scripts/root (it shares the tree)
IQ_BUILD_FLAGS := SANITIZE=$(SANITIZE) PG=$(MAJORVERSION)
ifneq ($(shell cat .build-flags 2>/dev/null),$(IQ_BUILD_FLAGS))
$(shell echo '$(IQ_BUILD_FLAGS)' > .build-flags)
endif
$(OBJS): .build-flags
# and the JIT's bitcode: another release's clang writes bitcode this one's
# llvm-lto cannot read (a tree built in a root, then on the host)
$(OBJS:.o=.bc): .build-flags

ifeq ($(SANITIZE),1)
# preloaded after libasan by scripts/instance (see scripts/asan_preload.c)
all: asan_preload.so
asan_preload.so: scripts/asan_preload.c
	$(CC) -shared -fPIC -O2 -o $@ $<
endif

# make fuzz: libFuzzer targets (clang) for the wire codec and the HTTP
# server's URL and JSON handling, with no PostgreSQL; fuzz/run runs them
FUZZ_CC ?= clang
FUZZ_CFLAGS = -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	-I$(srcdir)
FUZZ_TARGETS = wire_request wire_reader http_json http_route http_access
FUZZ_BINS = $(addprefix fuzz/bin/,$(FUZZ_TARGETS))

fuzz: $(FUZZ_BINS)
.PHONY: fuzz

HTTP_DIR = worker/serve/http
fuzz/bin/wire_request: fuzz/wire_request.c common/wire.c common/wire.h
	@mkdir -p fuzz/bin
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ fuzz/wire_request.c common/wire.c
fuzz/bin/wire_reader: fuzz/wire_reader.c common/wire.c common/wire.h
	@mkdir -p fuzz/bin
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ fuzz/wire_reader.c common/wire.c
fuzz/bin/http_json: fuzz/http_json.c $(HTTP_DIR)/json.c common/wire.c common/stores.c common/utf8.c \
		$(HTTP_DIR)/http_internal.h
	@mkdir -p fuzz/bin
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ fuzz/http_json.c $(HTTP_DIR)/json.c common/wire.c common/stores.c \
		common/utf8.c -ljansson -lmicrohttpd
fuzz/bin/http_access: fuzz/http_access.c $(HTTP_DIR)/access.c $(HTTP_DIR)/access.h common/tls.c \
		common/wire.c $(HTTP_DIR)/http_internal.h
	@mkdir -p fuzz/bin
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ fuzz/http_access.c $(HTTP_DIR)/access.c common/tls.c common/wire.c \
		-lgnutls -lcurl
fuzz/bin/http_route: fuzz/http_route.c $(HTTP_DIR)/routes.c $(HTTP_DIR)/json.c common/wire.c \
		common/stores.c common/partitioner.c common/utf8.c common/peer_api.c \
		$(HTTP_DIR)/http_internal.h
	@mkdir -p fuzz/bin
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ fuzz/http_route.c $(HTTP_DIR)/routes.c $(HTTP_DIR)/json.c \
		common/wire.c common/stores.c common/partitioner.c common/utf8.c common/peer_api.c \
		-ljansson -lz
