// SPDX-License-Identifier: Apache-2.0
// A shared library that dlopen_state loads and unloads again and again.
#include <stdint.h>

static uint64_t g_loaded = 0;
static const char g_text[] = "ephemeral";

__attribute__((constructor)) static void ephemeral_ctor(void) {
    g_loaded = 77;
}

uint64_t ephemeral_value(uint64_t x) {
    return x * 3 + g_loaded + (uint64_t)sizeof g_text;
}
