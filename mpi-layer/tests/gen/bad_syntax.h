/* A PMPI_ declaration the parser cannot read (a function-pointer parameter spelled inline). */
int PMPI_Send(const void *buf, int (*cb)(int), int dest);
