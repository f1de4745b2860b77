! SPDX-License-Identifier: Apache-2.0
! The Fortran calls whose bindings reach into the MPI library's internals (Open MPI: strings,
! attributes, keyvals, MPI_TYPE_MATCH_SIZE; MPICH: attributes): names of communicators and types,
! info keys, the processor name and error strings, predefined and user attributes on communicators,
! types and windows with Fortran copy and delete callbacks (MPI-2 and MPI-1 forms), matched types
! and an error handler made from Fortran. Each rank prints what it read; the output must equal a native run's.
module fortran_attrs_callbacks
  use mpi
  implicit none
  integer :: deletes = 0, handled = 0, handled_code = 0
contains
  subroutine on_error(comm, code)
    integer :: comm, code
    handled = handled + 1
    handled_code = code
  end subroutine on_error
  subroutine copy_plus(oldcomm, keyval, extra, val_in, val_out, flag, ierr)
    integer :: oldcomm, keyval, ierr
    integer(kind=MPI_ADDRESS_KIND) :: extra, val_in, val_out
    logical :: flag
    val_out = val_in + extra
    flag = .true.
    ierr = MPI_SUCCESS
  end subroutine copy_plus
  subroutine delete_count(comm, keyval, val, extra, ierr)
    integer :: comm, keyval, ierr
    integer(kind=MPI_ADDRESS_KIND) :: val, extra
    deletes = deletes + 1
    ierr = MPI_SUCCESS
  end subroutine delete_count
  subroutine copy1_times(oldcomm, keyval, extra, val_in, val_out, flag, ierr)
    integer :: oldcomm, keyval, extra, val_in, val_out, ierr
    logical :: flag
    val_out = val_in * extra
    flag = .true.
    ierr = MPI_SUCCESS
  end subroutine copy1_times
end module fortran_attrs_callbacks

program fortran_attrs
  use mpi
  use fortran_attrs_callbacks
  implicit none
  integer :: ierr, rank, nprocs, dup, dup2, key, key1, tkey, wkey, vtype, info, win, rlen, t
  integer :: nkeys, vlen, ival, sz, errh
  integer(kind=MPI_ADDRESS_KIND) :: val, tag_ub, wsize
  logical :: flag, ok
  character(len=MPI_MAX_OBJECT_NAME) :: name
  character(len=MPI_MAX_PROCESSOR_NAME) :: proc
  character(len=MPI_MAX_ERROR_STRING) :: estr
  character(len=MPI_MAX_INFO_VAL) :: value
  character(len=MPI_MAX_INFO_KEY) :: ikey
  integer :: buf(4)

  call MPI_Init(ierr)
  call MPI_Comm_rank(MPI_COMM_WORLD, rank, ierr)
  call MPI_Comm_size(MPI_COMM_WORLD, nprocs, ierr)
  ok = .true.

  ! Strings both ways.
  call MPI_Comm_dup(MPI_COMM_WORLD, dup, ierr)
  call MPI_Comm_set_name(dup, '  the duplicate  ', ierr)
  call MPI_Comm_get_name(dup, name, rlen, ierr)
  print '(a,i0,a,a,a,i0)', 'rank ', rank, ' name [', name(1:rlen), '] len ', rlen
  call MPI_Type_get_name(MPI_INTEGER, name, rlen, ierr)
  print '(a,i0,a,a)', 'rank ', rank, ' type name ', name(1:rlen)
  call MPI_Get_processor_name(proc, rlen, ierr)
  ok = ok .and. rlen > 0 .and. ierr == MPI_SUCCESS
  call MPI_Error_string(MPI_ERR_COMM, estr, rlen, ierr)
  ok = ok .and. rlen > 0 .and. ierr == MPI_SUCCESS
  call MPI_Info_create(info, ierr)
  call MPI_Info_set(info, 'ghost_key', 'a value ', ierr)
  call MPI_Info_get(info, 'ghost_key', MPI_MAX_INFO_VAL, value, flag, ierr)
  call MPI_Info_get_valuelen(info, 'ghost_key', vlen, flag, ierr)
  call MPI_Info_get_nkeys(info, nkeys, ierr)
  call MPI_Info_get_nthkey(info, 0, ikey, ierr)
  print '(a,i0,a,a,a,i0,a,i0,a,a)', 'rank ', rank, ' info [', trim(value), '] len ', vlen, &
      ' keys ', nkeys, ' first ', trim(ikey)
  call MPI_Info_free(info, ierr)

  ! A predefined attribute: an integer in Fortran.
  call MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, tag_ub, flag, ierr)
  ok = ok .and. flag .and. tag_ub >= 32767
  call MPI_Attr_get(MPI_COMM_WORLD, MPI_TAG_UB, ival, flag, ierr)
  ok = ok .and. flag .and. ival == tag_ub

  ! User attributes with Fortran callbacks: copied (plus extra state) by MPI_Comm_dup, deleted.
  call MPI_Comm_create_keyval(copy_plus, delete_count, key, 1000_MPI_ADDRESS_KIND, ierr)
  call MPI_Comm_set_attr(dup, key, 40_MPI_ADDRESS_KIND + rank, ierr)
  call MPI_Comm_dup(dup, dup2, ierr)
  call MPI_Comm_get_attr(dup2, key, val, flag, ierr)
  print '(a,i0,a,l1,a,i0)', 'rank ', rank, ' copied attr ', flag, ' = ', val
  call MPI_Comm_set_attr(dup2, key, 7_MPI_ADDRESS_KIND, ierr) ! deletes the copied value
  call MPI_Comm_get_attr(dup2, key, val, flag, ierr)
  print '(a,i0,a,i0,a,i0)', 'rank ', rank, ' replaced attr ', val, ' deletes ', deletes
  call MPI_Comm_free(dup2, ierr)
  call MPI_Comm_delete_attr(dup, key, ierr)
  call MPI_Comm_get_attr(dup, key, val, flag, ierr)
  print '(a,i0,a,l1,a,i0)', 'rank ', rank, ' after delete ', flag, ' deletes ', deletes
  call MPI_Comm_free_keyval(key, ierr)

  ! The MPI-1 forms: INTEGER values and extra state.
  call MPI_Keyval_create(copy1_times, MPI_NULL_DELETE_FN, key1, 3, ierr)
  call MPI_Attr_put(dup, key1, 5 + rank, ierr)
  call MPI_Comm_dup(dup, dup2, ierr)
  call MPI_Attr_get(dup2, key1, ival, flag, ierr)
  print '(a,i0,a,l1,a,i0)', 'rank ', rank, ' mpi-1 copied ', flag, ' = ', ival
  call MPI_Comm_free(dup2, ierr)
  call MPI_Keyval_free(key1, ierr)

  ! The predefined Fortran callbacks.
  call MPI_Comm_create_keyval(MPI_COMM_DUP_FN, MPI_COMM_NULL_DELETE_FN, key, 0_MPI_ADDRESS_KIND, ierr)
  call MPI_Comm_set_attr(dup, key, 123456789012_MPI_ADDRESS_KIND, ierr)
  call MPI_Comm_dup(dup, dup2, ierr)
  call MPI_Comm_get_attr(dup2, key, val, flag, ierr)
  print '(a,i0,a,l1,a,i0)', 'rank ', rank, ' dup_fn ', flag, ' = ', val
  call MPI_Comm_free(dup2, ierr)
  call MPI_Comm_free_keyval(key, ierr)

  ! Datatype and window attributes.
  call MPI_Type_contiguous(3, MPI_INTEGER, vtype, ierr)
  call MPI_Type_create_keyval(MPI_TYPE_NULL_COPY_FN, MPI_TYPE_NULL_DELETE_FN, tkey, &
                              0_MPI_ADDRESS_KIND, ierr)
  call MPI_Type_set_attr(vtype, tkey, 77_MPI_ADDRESS_KIND, ierr)
  call MPI_Type_get_attr(vtype, tkey, val, flag, ierr)
  print '(a,i0,a,l1,a,i0)', 'rank ', rank, ' type attr ', flag, ' = ', val
  call MPI_Type_free(vtype, ierr)
  call MPI_Type_free_keyval(tkey, ierr)
  call MPI_Win_create(buf, 16_MPI_ADDRESS_KIND, 4, MPI_INFO_NULL, MPI_COMM_WORLD, win, ierr)
  call MPI_Win_get_attr(win, MPI_WIN_SIZE, wsize, flag, ierr)
  print '(a,i0,a,l1,a,i0)', 'rank ', rank, ' win size ', flag, ' = ', wsize
  call MPI_Win_get_attr(win, MPI_WIN_DISP_UNIT, val, flag, ierr)
  print '(a,i0,a,l1,a,i0)', 'rank ', rank, ' win disp unit ', flag, ' = ', val
  call MPI_Win_create_keyval(MPI_WIN_NULL_COPY_FN, MPI_WIN_NULL_DELETE_FN, wkey, &
                             0_MPI_ADDRESS_KIND, ierr)
  call MPI_Win_set_attr(win, wkey, 99_MPI_ADDRESS_KIND, ierr)
  call MPI_Win_get_attr(win, wkey, val, flag, ierr)
  print '(a,i0,a,l1,a,i0)', 'rank ', rank, ' win attr ', flag, ' = ', val
  call MPI_Win_free(win, ierr)
  call MPI_Win_free_keyval(wkey, ierr)

  ! Matched types (each MPI answers with its own choice: the native run's is the reference).
  call MPI_Type_match_size(MPI_TYPECLASS_INTEGER, 8, t, ierr)
  call MPI_Type_size(t, sz, ierr)
  call MPI_Type_get_name(t, name, rlen, ierr)
  print '(a,i0,a,a,a,i0)', 'rank ', rank, ' match integer 8 ', name(1:rlen), ' size ', sz
  call MPI_Type_match_size(MPI_TYPECLASS_REAL, 8, t, ierr)
  call MPI_Type_get_name(t, name, rlen, ierr)
  print '(a,i0,a,a)', 'rank ', rank, ' match real 8 ', name(1:rlen)
  call MPI_Type_match_size(MPI_TYPECLASS_COMPLEX, 16, t, ierr)
  call MPI_Type_get_name(t, name, rlen, ierr)
  print '(a,i0,a,a)', 'rank ', rank, ' match complex 16 ', name(1:rlen)

  ! An error handler made from Fortran, called on a communicator.
  call MPI_Comm_create_errhandler(on_error, errh, ierr)
  call MPI_Comm_set_errhandler(dup, errh, ierr)
  call MPI_Errhandler_free(errh, ierr)
  call MPI_Comm_call_errhandler(dup, MPI_ERR_OTHER, ierr)
  print '(a,i0,a,i0,a,l1)', 'rank ', rank, ' fortran error handler calls ', handled, &
      ' right code ', handled_code == MPI_ERR_OTHER

  call MPI_Comm_free(dup, ierr)
  if (ok) then
    print '(a,i0,a)', 'rank ', rank, ' PASS'
  else
    print '(a,i0,a)', 'rank ', rank, ' FAIL'
  end if
  call MPI_Finalize(ierr)
end program fortran_attrs
