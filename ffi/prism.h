/* prism.h - what the C helpers include: system headers, the shared BPF header, then the plain API that cffi also reads. */
#ifndef PRISM_H
#define PRISM_H

#include <stdint.h>
#include <linux/types.h>
#include <linux/if_xdp.h>

#include "prism_uapi.h"

#include "../xdp_progs/prism_common.h"
#include "prism_api.h"

#endif /* PRISM_H */
