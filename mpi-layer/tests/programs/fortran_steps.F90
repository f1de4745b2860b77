! SPDX-License-Identifier: Apache-2.0
! A Fortran job (use mpi) for the job checkpoint tests, as programs/job_steps.c is for C: STEPS steps
! of a ring exchange (MPI_Sendrecv), an MPI_Allreduce and an MPI_Bcast from a rotating root, every
! received value checked and folded into a per-rank checksum; SLEEP_MS of sleep between steps
! (outside MPI). Prints only at its end, so that a job restarted from a checkpoint prints what an
! uninterrupted one prints. Before its last step rank 0 waits for the file named by MPIT_HOLD_FILE,
! when set (programs/mpit.h: the harness releases the job once it has acted on it).
! Before the steps it names a duplicate of MPI_COMM_WORLD and sets an attribute on it with a keyval
! made from Fortran (copy callback in Fortran); after them it reads name and attribute back and
! duplicates the communicator (the callback runs), so that checkpoints in between must carry them.
! Each step also sends the other way with MPI_Isend/MPI_Irecv/MPI_Waitall on the duplicate and
! through persistent requests made before the steps with a derived type: Fortran handles of
! requests, communicators and datatypes that checkpoints must keep naming the same objects.
! Built twice: with `use mpi` and, with -DGHOST_F08, with `use mpi_f08` (handles are derived types,
! statuses a type; MPICH's f08 keyval calls go through the library's internal proxies otherwise).
! Usage: fortran_steps STEPS [SLEEP_MS]
#ifdef GHOST_F08
#define MPI_MODULE mpi_f08
#define COMM_T type(MPI_Comm)
#define TYPE_T type(MPI_Datatype)
#define REQUEST_T type(MPI_Request)
#define STATUS_OF(a, i) a(i)
#define SOURCE_OF(a, i) a(i)%MPI_SOURCE
#else
#define MPI_MODULE mpi
#define COMM_T integer
#define TYPE_T integer
#define REQUEST_T integer
#define STATUS_OF(a, i) a(:, i)
#define SOURCE_OF(a, i) a(MPI_SOURCE, i)
#endif
module fortran_steps_copy
  use MPI_MODULE
  implicit none
contains
  subroutine copy_plus(oldcomm, keyval, extra, val_in, val_out, flag, ierr)
    COMM_T :: oldcomm
    integer :: keyval, ierr
    integer(kind=MPI_ADDRESS_KIND) :: extra, val_in, val_out
    logical :: flag
    val_out = val_in + extra
    flag = .true.
    ierr = MPI_SUCCESS
  end subroutine copy_plus
end module fortran_steps_copy

program fortran_steps
  use MPI_MODULE
  use fortran_steps_copy
  use, intrinsic :: iso_c_binding, only: c_int
  implicit none
  interface
    integer(c_int) function usleep(us) bind(C, name='usleep')
      import :: c_int
      integer(c_int), value :: us
    end function usleep
  end interface
  integer, parameter :: i8 = selected_int_kind(18)
  integer(i8), parameter :: modulus = 1000000007_i8
  integer :: ierr, rank, nprocs, left, right, steps, sleep_ms, s, n
  integer(i8) :: failures, all_failures
  integer(i8) :: mine, got, total, root_val, want_total, sum, k
#ifdef GHOST_F08
  type(MPI_Status) :: status, stats(2)
#else
  integer :: status(MPI_STATUS_SIZE), stats(MPI_STATUS_SIZE, 2)
#endif
  character(len=4096) :: arg, hold
  logical :: released, flag
  integer :: key, namelen
  COMM_T :: dup, dup2
  TYPE_T :: pair
  REQUEST_T :: ps, pr, reqs(2)
  ! written by MPI behind the compiler's back (completed by MPI_Wait*, which does not name them)
  integer(i8), volatile :: back, pout(2), pin(2)
  integer(kind=MPI_ADDRESS_KIND) :: attr
  character(len=MPI_MAX_OBJECT_NAME) :: dupname

  call MPI_Init(ierr)
  call MPI_Comm_rank(MPI_COMM_WORLD, rank, ierr)
  call MPI_Comm_size(MPI_COMM_WORLD, nprocs, ierr)
  steps = 100
  sleep_ms = 20
  if (command_argument_count() >= 1) then
    call get_command_argument(1, arg)
    read (arg, *) steps
  end if
  if (command_argument_count() >= 2) then
    call get_command_argument(2, arg)
    read (arg, *) sleep_ms
  end if
  call get_environment_variable('MPIT_HOLD_FILE', hold, n)
  right = mod(rank + 1, nprocs)
  left = mod(rank + nprocs - 1, nprocs)
  failures = 0
  sum = 17
  call MPI_Comm_dup(MPI_COMM_WORLD, dup, ierr)
  call MPI_Comm_set_name(dup, 'steps duplicate', ierr)
  call MPI_Comm_create_keyval(copy_plus, MPI_COMM_NULL_DELETE_FN, key, 100_MPI_ADDRESS_KIND, ierr)
  call MPI_Comm_set_attr(dup, key, int(rank, MPI_ADDRESS_KIND) + 5, ierr)
  call MPI_Type_contiguous(2, MPI_INTEGER8, pair, ierr)
  call MPI_Type_commit(pair, ierr)
  call MPI_Send_init(pout, 1, pair, right, 77, dup, ps, ierr)
  call MPI_Recv_init(pin, 1, pair, left, 77, dup, pr, ierr)
  do s = 0, steps - 1
    if (s == steps - 1 .and. rank == 0 .and. n > 0) then
      released = .false.
      do while (.not. released)
        inquire (file=hold(1:n), exist=released)
        if (.not. released) ierr = usleep(10000)
      end do
    end if
    mine = value_of(rank, s)
    call MPI_Sendrecv(mine, 1, MPI_INTEGER8, right, s, got, 1, MPI_INTEGER8, left, s, &
                      MPI_COMM_WORLD, status, ierr)
    if (got /= value_of(left, s)) failures = failures + 1
    call MPI_Allreduce(mine, total, 1, MPI_INTEGER8, MPI_SUM, MPI_COMM_WORLD, ierr)
    want_total = 0
    do k = 0, nprocs - 1
      want_total = want_total + value_of(int(k), s)
    end do
    if (total /= want_total) failures = failures + 1
    root_val = mine
    call MPI_Bcast(root_val, 1, MPI_INTEGER8, mod(s, nprocs), MPI_COMM_WORLD, ierr)
    if (root_val /= value_of(mod(s, nprocs), s)) failures = failures + 1
    back = -1
    call MPI_Irecv(back, 1, MPI_INTEGER8, right, 1000 + s, dup, reqs(1), ierr)
    call MPI_Isend(got, 1, MPI_INTEGER8, left, 1000 + s, dup, reqs(2), ierr)
    call MPI_Waitall(2, reqs, stats, ierr)
    if (back /= mine .or. SOURCE_OF(stats, 1) /= right) failures = failures + 1
    pout(1) = mine
    pout(2) = s
    pin = -1
    call MPI_Start(pr, ierr)
    call MPI_Start(ps, ierr)
    call MPI_Wait(pr, STATUS_OF(stats, 1), ierr)
    call MPI_Wait(ps, STATUS_OF(stats, 2), ierr)
    if (pin(1) /= value_of(left, s) .or. pin(2) /= s) failures = failures + 1
    if (pr == MPI_REQUEST_NULL .or. ps == MPI_REQUEST_NULL) failures = failures + 1
    sum = mod(sum * 131_i8 + got, modulus)
    sum = mod(sum * 131_i8 + mod(total, modulus), modulus)
    if (sleep_ms > 0) ierr = usleep(int(sleep_ms * 1000, c_int))
  end do
  call MPI_Comm_get_name(dup, dupname, namelen, ierr)
  if (dupname(1:namelen) /= 'steps duplicate') failures = failures + 1
  call MPI_Comm_dup(dup, dup2, ierr)
  call MPI_Comm_get_attr(dup2, key, attr, flag, ierr)
  if (.not. flag .or. attr /= rank + 105) failures = failures + 1
  call MPI_Comm_free(dup2, ierr)
  call MPI_Request_free(pr, ierr)
  call MPI_Request_free(ps, ierr)
  call MPI_Type_free(pair, ierr)
  call MPI_Comm_free(dup, ierr)
  call MPI_Comm_free_keyval(key, ierr)
  call MPI_Allreduce(failures, all_failures, 1, MPI_INTEGER8, MPI_SUM, MPI_COMM_WORLD, ierr)
  print '(a,i0,a,i0,a,i0)', 'rank ', rank, ': fortran_steps ', steps, ' steps checksum ', sum
  if (all_failures == 0) then
    print '(a,i0,a)', 'rank ', rank, ': fortran_steps PASS'
  else
    print '(a,i0,a,i0,a)', 'rank ', rank, ': fortran_steps FAIL (', all_failures, ' wrong values)'
  end if
  call MPI_Finalize(ierr)

contains

  ! What rank r sends at step s (every rank can recompute any other's).
  integer(i8) function value_of(r, s)
    integer, intent(in) :: r, s
    value_of = mod(int(r, i8) * 1000003_i8 + int(s, i8) * 7919_i8 + 12345_i8, modulus)
  end function value_of
end program fortran_steps
