/* A prototype whose parameter type the generator has no rule for: it must stop, naming the
 * function. */
typedef struct weird_s *MPI_Weird;
int PMPI_Send(const void *buf, int count, MPI_Weird datatype, int dest, int tag, int comm);
