# nudge -- one Makefile for the whole product.
#
#   make run      set up (apt), build, start the server with the sample config
#   make test     set up, build, run every unit and integration test
#   make asan     the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make fuzz     every libFuzzer target for FUZZ_SECONDS each
#   make bench    benchmarks that print figures
#   make lint     clang-format check + cppcheck
#
# Sources are discovered: every src/<module>/*.c except src/app/main.c goes into
# libnudge.a (so unit tests can reach config and wiring); main.c makes `nudge`; tests/unit/test_<m>.c are
# cmocka programs; tests/fuzz/fuzz_<x>.c are libFuzzer targets; bench/bench_<x>.c
# print figures. BUILD selects the output folder so several builds (plain, asan,
# fuzz) live side by side.

BUILD   ?= build
CC      ?= cc
SHARED  ?= $(abspath ../shared)
OPT     ?= -O2
SAN     ?=
FUZZ_SECONDS ?= 60
PYTHON  ?= $(shell [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3)

WARN    := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
CFLAGS  += -std=c17 -D_GNU_SOURCE $(OPT) -g $(WARN) -Isrc -pthread \
           -fno-strict-aliasing $(SAN)
ICU_LIBS := $(shell pkg-config --libs icu-uc icu-i18n 2>/dev/null || echo -licui18n -licuuc -licudata)
LDLIBS  += -luv -lhttp_parser -ljson-c -lrocksdb -lcurl -lcrypto -lpcre2-8 \
           -linih $(ICU_LIBS) -lm -pthread

ifeq ($(SAN),)
else
LDFLAGS += $(SAN)
endif

LIB_SRCS  := $(sort $(filter-out src/app/main.c,$(wildcard src/*/*.c)))
APP_SRCS  := src/app/main.c
LIB_OBJS  := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
APP_OBJS  := $(APP_SRCS:%.c=$(BUILD)/obj/%.o)
UNIT_SRCS := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRCS := $(sort $(wildcard tests/fuzz/fuzz_*.c))
BENCH_SRCS:= $(sort $(wildcard bench/bench_*.c))
BENCH_BINS:= $(BENCH_SRCS:bench/%.c=$(BUILD)/bench/%)
NUDGE     := $(BUILD)/nudge

.PHONY: all setup run test unit integ check asan fuzz fuzz-build bench lint install clean

all: $(NUDGE) $(UNIT_BINS) $(BENCH_BINS)

setup:
	@./scripts/setup

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libnudge.a: $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(NUDGE): $(APP_OBJS) $(BUILD)/libnudge.a
	$(CC) $(LDFLAGS) -o $@ $(APP_OBJS) $(BUILD)/libnudge.a $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libnudge.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DSHARED_DIR='"$(SHARED)"' -MMD -MP $(LDFLAGS) -o $@ $< \
		$(BUILD)/libnudge.a -lcmocka $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(BUILD)/libnudge.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DSHARED_DIR='"$(SHARED)"' -MMD -MP $(LDFLAGS) -o $@ $< \
		$(BUILD)/libnudge.a $(LDLIBS)

run: setup $(NUDGE)
	$(NUDGE) serve --config nudge.conf

# T=expr runs only tests/unit/test_expr.c and tests/integ/test_expr*.py.
T ?=
unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do \
		case "$$t" in *test_$(T)*) ;; *) continue ;; esac; \
		echo "== $$t"; NUDGE_SHARED=$(SHARED) $$t; done

integ: $(NUDGE)
	NUDGE_BIN=$(abspath $(NUDGE)) NUDGE_SHARED=$(SHARED) \
		$(PYTHON) -m unittest discover -s tests/integ -p 'test_$(T)*.py' -v

check: unit integ

test: setup
	$(MAKE) all
	$(MAKE) check

asan:
	$(MAKE) BUILD=build-asan OPT=-O1 \
		SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
		check

# libFuzzer targets: the library is rebuilt with clang and coverage hooks.
FUZZ_BUILD := build-fuzz
FUZZ_SAN   := -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
fuzz-build:
	$(MAKE) BUILD=$(FUZZ_BUILD) CC=clang OPT=-O1 SAN="$(FUZZ_SAN)" $(FUZZ_BUILD)/libnudge.a
	@mkdir -p $(FUZZ_BUILD)/fuzz
	@set -e; for f in $(FUZZ_SRCS); do n=$$(basename $$f .c); \
		clang $(CFLAGS) -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
			-o $(FUZZ_BUILD)/fuzz/$$n $$f $(FUZZ_BUILD)/libnudge.a $(LDLIBS); done

fuzz: fuzz-build
	@set -e; for f in $(FUZZ_SRCS); do n=$$(basename $$f .c); \
		mkdir -p $(FUZZ_BUILD)/corpus/$$n $(FUZZ_BUILD)/artifacts; \
		seeds=; [ -d tests/fuzz/corpus/$$n ] && seeds=tests/fuzz/corpus/$$n; \
		echo "== fuzz $$n for $(FUZZ_SECONDS)s"; \
		rc=0; $(FUZZ_BUILD)/fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
			-rss_limit_mb=2048 -print_final_stats=1 \
			-artifact_prefix=$(FUZZ_BUILD)/artifacts/ \
			$(FUZZ_BUILD)/corpus/$$n $$seeds > $(FUZZ_BUILD)/$$n.log 2>&1 || rc=$$?; \
		tail -n 12 $(FUZZ_BUILD)/$$n.log; \
		if [ $$rc -ne 0 ]; then echo "fuzz $$n FAILED (exit $$rc):"; \
			grep -E "ERROR|runtime error|SUMMARY" $(FUZZ_BUILD)/$$n.log | head -n 5; exit 1; fi; \
	done

bench: setup $(NUDGE) $(BENCH_BINS)
	@set -e; for b in $(BENCH_BINS); do echo "== $$b"; NUDGE_SHARED=$(SHARED) $$b; done
	@[ ! -x bench/ingest.sh ] || NUDGE_BIN=$(abspath $(NUDGE)) bench/ingest.sh
	@[ ! -x bench/journeys.sh ] || NUDGE_BIN=$(abspath $(NUDGE)) bench/journeys.sh
	@[ ! -x bench/audiences.sh ] || NUDGE_BIN=$(abspath $(NUDGE)) bench/audiences.sh

lint:
	clang-format --dry-run -Werror $(LIB_SRCS) $(APP_SRCS) $(wildcard src/*/*.h)
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability \
		--inline-suppr -Isrc --suppress=missingIncludeSystem src

PREFIX ?= /usr/local
install: $(NUDGE)
	install -D -m 0755 $(NUDGE) $(DESTDIR)$(PREFIX)/bin/nudge

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
