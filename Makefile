# iq_fdw: Kafka stream state as PostgreSQL foreign tables (PGXS build)

MODULE_big = iq_fdw
EXTENSION = iq_fdw
DATA = iq_fdw--0.1.sql
PGFILEDESC = "iq_fdw - queryable Kafka stream state"

SRC_C = $(wildcard src/*.c)
WORKER_C = $(wildcard worker/*.c)
OBJS = iq_fdw.o $(SRC_C:.c=.o) $(WORKER_C:.c=.o)

REGRESS = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --inputdir=. --load-extension=iq_fdw

PG_CPPFLAGS = -I$(srcdir) -I$(srcdir)/src -I$(srcdir)/worker
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter -pthread
# warnings fail our own builds and CI (scripts/ pass WERROR=1), not a
# packager's build on a compiler we never tried
ifeq ($(WERROR),1)
PG_CFLAGS += -Werror
endif
# PGXS has no header dependencies: without these, a changed struct in a
# header leaves objects built against the old layout
PG_CFLAGS += -MMD -MP
SHLIB_LINK = -lrdkafka -lrocksdb -lcurl -lmicrohttpd -ljansson -lz -lpthread

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

DEPS = $(OBJS:.o=.d)
EXTRA_CLEAN = $(DEPS)
-include $(DEPS)
$(DEPS): ;
