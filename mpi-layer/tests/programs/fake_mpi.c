/* SPDX-License-Identifier: Apache-2.0 */
/* A stand-in "libmpi.so.12" (an MPI ghost was not built for), for ghostrun's bad-input test. */
int MPI_Init(int *argc, char ***argv) {
    (void)argc, (void)argv;
    return 0;
}
