/* SPDX-License-Identifier: Apache-2.0 */
/* Linked against the fake libmpi.so.12: ghostrun must refuse it with one line. */
int MPI_Init(int *argc, char ***argv);
int main(int argc, char **argv) {
    return MPI_Init(&argc, &argv);
}
