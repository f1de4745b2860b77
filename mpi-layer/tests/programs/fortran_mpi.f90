! SPDX-License-Identifier: Apache-2.0
! A Fortran MPI program (use mpi): a ring exchange, an allreduce, a broadcast of a derived vector,
! a communicator split and a reduction on it. Each rank prints its results and PASS.
program fortran_mpi
  use mpi
  implicit none
  integer :: ierr, rank, nprocs, left, right, color, sub, subrank, subsize, i, vtype
  integer :: status(MPI_STATUS_SIZE)
  double precision :: mine(8), got(8), total, subtotal
  integer :: grid(4, 6)
  character(len=64) :: line

  call MPI_Init(ierr)
  call MPI_Comm_rank(MPI_COMM_WORLD, rank, ierr)
  call MPI_Comm_size(MPI_COMM_WORLD, nprocs, ierr)
  right = mod(rank + 1, nprocs)
  left = mod(rank + nprocs - 1, nprocs)
  do i = 1, 8
    mine(i) = rank * 100 + i * 0.5d0
  end do
  call MPI_Sendrecv(mine, 8, MPI_DOUBLE_PRECISION, right, 7, got, 8, MPI_DOUBLE_PRECISION, left, 7, &
                    MPI_COMM_WORLD, status, ierr)
  if (status(MPI_SOURCE) /= left .or. abs(got(3) - (left * 100 + 1.5d0)) > 0) then
    print '(a,i0,a)', 'FAIL fortran_mpi: rank ', rank, ' ring'
    call MPI_Abort(MPI_COMM_WORLD, 1, ierr)
  end if
  call MPI_Allreduce(sum(mine), total, 1, MPI_DOUBLE_PRECISION, MPI_SUM, MPI_COMM_WORLD, ierr)
  ! A column of a 4x6 grid as a strided vector type, broadcast from rank 0.
  grid = 0
  if (rank == 0) then
    do i = 1, 6
      grid(2, i) = i * 11
    end do
  end if
  call MPI_Type_vector(6, 1, 4, MPI_INTEGER, vtype, ierr)
  call MPI_Type_commit(vtype, ierr)
  call MPI_Bcast(grid(2, 1), 1, vtype, 0, MPI_COMM_WORLD, ierr)
  call MPI_Type_free(vtype, ierr)
  color = mod(rank, 2)
  call MPI_Comm_split(MPI_COMM_WORLD, color, -rank, sub, ierr)
  call MPI_Comm_rank(sub, subrank, ierr)
  call MPI_Comm_size(sub, subsize, ierr)
  call MPI_Allreduce(dble(rank), subtotal, 1, MPI_DOUBLE_PRECISION, MPI_MAX, sub, ierr)
  call MPI_Comm_free(sub, ierr)
  write (line, '(a,i0,a,f10.2,a,6i4)') 'rank ', rank, ' total ', total, ' column', grid(2, :)
  print '(a)', trim(line)
  print '(a,i0,a,i0,a,i0,a,f6.1)', 'rank ', rank, ' color ', color, ' subrank ', subrank, ' max ', subtotal
  print '(a,i0,a)', 'rank ', rank, ' PASS'
  call MPI_Finalize(ierr)
end program fortran_mpi
