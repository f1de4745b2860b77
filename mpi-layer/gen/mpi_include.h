/* SPDX-License-Identifier: Apache-2.0 */
/* Preprocessed per flavour; the generator reads the result. */
#include <mpi.h>
