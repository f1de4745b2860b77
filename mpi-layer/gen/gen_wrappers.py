#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Generate the split-process MPI layer for one MPI implementation from its headers and library.

Outputs (all in --out):
  wrappers.cpp      upper half: one wrapper per PMPI_ function (+ weak MPI_ alias), flavour_bind()
  lower_table.c     lower half: the function table and predefined-object table handed back at start-up
  stub.c            upper stub library: every dynamic symbol of the real library (same soname, same
                    object sizes), so the application never loads the real MPI in the upper half

Every wrapper follows one template: translate handles -> enter lower half -> call -> leave -> translate
back (adopt new handles, settle/drop completed or freed ones). Any parameter the rules below do not
cover makes the generator fail with the function's name: nothing is forwarded untranslated by accident.
"""
import argparse
import re
import subprocess
import sys

import mpi_decls

HANDLES = {'MPI_Comm': 'comm', 'MPI_Group': 'group', 'MPI_Datatype': 'datatype', 'MPI_Op': 'op',
           'MPI_Errhandler': 'errhandler', 'MPI_Info': 'info', 'MPI_Win': 'win', 'MPI_File': 'file',
           'MPI_Request': 'request', 'MPI_Message': 'message', 'MPI_Session': 'session'}

# Plain data: passed through untouched (same ABI in both halves).
PLAIN = {'int', 'char', 'void', 'double', 'MPI_Aint', 'MPI_Offset', 'MPI_Count', 'MPI_Fint', 'MPI_Status',
         'MPI_F08_status', 'MPI_T_enum', 'MPI_T_cvar_handle', 'MPI_T_pvar_handle', 'MPI_T_pvar_session',
         'MPI_T_cb_safety', 'MPI_T_source_order', 'MPI_T_event_instance', 'MPI_T_event_registration'}

# Callback parameters: wrapped so that user code runs with the upper FS and upper handles.
CALLBACKS = {'MPI_User_function': 'op', 'MPI_User_function_c': 'op_c',
             'MPI_Comm_errhandler_function': 'comm_errh', 'MPI_Handler_function': 'comm_errh',
             'MPI_Win_errhandler_function': 'win_errh', 'MPI_File_errhandler_function': 'file_errh',
             'MPI_Session_errhandler_function': 'session_errh',
             'MPI_Comm_copy_attr_function': 'comm_copy', 'MPI_Comm_delete_attr_function': 'comm_delete',
             'MPI_Copy_function': 'comm_copy', 'MPI_Delete_function': 'comm_delete',
             'MPI_Type_copy_attr_function': 'type_copy', 'MPI_Type_delete_attr_function': 'type_delete',
             'MPI_Win_copy_attr_function': 'win_copy', 'MPI_Win_delete_attr_function': 'win_delete',
             'MPI_Grequest_query_function': 'greq_query', 'MPI_Grequest_free_function': 'greq_free',
             'MPI_Grequest_cancel_function': 'greq_cancel',
             'MPI_Datarep_conversion_function': 'datarep_conv',
             'MPI_Datarep_conversion_function_c': 'datarep_conv_c',
             'MPI_Datarep_extent_function': 'datarep_extent'}
# Callbacks the layer does not carry across the split yet: such calls fail with a clear error.
UNSUPPORTED_CALLBACKS = {'MPI_T_event_cb_function', 'MPI_T_event_dropped_cb_function',
                         'MPI_T_event_free_cb_function'}
UNSUPPORTED_FUNCS = {'MPI_T_event_get_info'}

FREE = {'MPI_Comm_free', 'MPI_Comm_disconnect', 'MPI_Group_free', 'MPI_Type_free', 'MPI_Op_free',
        'MPI_Errhandler_free', 'MPI_Info_free', 'MPI_Win_free', 'MPI_File_close', 'MPI_Request_free',
        'MPI_Session_finalize'}
# Frees of objects an MPI may hand out again: after a restart, the ones the fresh lower half does
# not count stay in the upper half (vobj.h, lower_refs_owed).
OWED_FREE = {'MPI_Group_free', 'MPI_Type_free', 'MPI_Errhandler_free', 'MPI_Op_free'}
KEEP = {'MPI_Type_commit', 'MPI_Cancel', 'MPI_Start'}
SETTLE = {'MPI_Wait', 'MPI_Test', 'MPI_Mrecv', ('MPI_Imrecv', 'message')}

# Handle arrays, by position (names differ between implementations):
# (function, parameter index) -> (role, element count expression). In expressions $N is parameter N and
# $lcomm the lower communicator argument.
ARRAYS = {
    ('MPI_Startall', 1): ('keep', '$0'),
    ('MPI_Waitall', 1): ('settle', '$0'),
    ('MPI_Testall', 1): ('settle', '$0'),
    ('MPI_Waitany', 1): ('settle', '$0'),
    ('MPI_Testany', 1): ('settle', '$0'),
    ('MPI_Waitsome', 1): ('settle', '$0'),
    ('MPI_Testsome', 1): ('settle', '$0'),
    ('MPI_Type_create_struct', 3): ('in', '$0'),
    ('MPI_Type_struct', 3): ('in', '$0'),
    ('MPI_Comm_spawn_multiple', 4): ('in', '$0'),
    ('MPI_Type_get_contents', 6): ('out', '$3'),
    ('MPI_Type_get_contents_c', 8): ('out', '$4'),
}
for f in ('MPI_Alltoallw', 'MPI_Ialltoallw', 'MPI_Alltoallw_init'):
    ARRAYS[(f, 3)] = ('in', 'ghost::mpi::w_count($lcomm, 0, 0, $0 == MPI_IN_PLACE)')
    ARRAYS[(f, 7)] = ('in', 'ghost::mpi::w_count($lcomm, 1, 0, 0)')
for f in ('MPI_Neighbor_alltoallw', 'MPI_Ineighbor_alltoallw', 'MPI_Neighbor_alltoallw_init'):
    ARRAYS[(f, 3)] = ('in', 'ghost::mpi::w_count($lcomm, 0, 1, 0)')
    ARRAYS[(f, 7)] = ('in', 'ghost::mpi::w_count($lcomm, 1, 1, 0)')

# Non-handle arrays deep-copied into creation records: function -> [(parameter index, count expression)]
RECORD_ARRAYS = {
    'MPI_Type_indexed': [(1, '$0'), (2, '$0')],
    'MPI_Type_hindexed': [(1, '$0'), (2, '$0')],
    'MPI_Type_create_hindexed': [(1, '$0'), (2, '$0')],
    'MPI_Type_create_indexed_block': [(2, '$0')],
    'MPI_Type_create_hindexed_block': [(2, '$0')],
    'MPI_Type_create_struct': [(1, '$0'), (2, '$0'), (3, '$0')],
    'MPI_Type_struct': [(1, '$0'), (2, '$0'), (3, '$0')],
    'MPI_Type_create_subarray': [(1, '$0'), (2, '$0'), (3, '$0')],
    'MPI_Type_create_darray': [(3, '$2'), (4, '$2'), (5, '$2'), (6, '$2')],
    'MPI_Cart_create': [(2, '$1'), (3, '$1')],
    'MPI_Graph_create': [(2, '$1'), (3, '($1 > 0 ? $2[$1 - 1] : 0)')],
    'MPI_Cart_sub': [(1, 'ghost::mpi::cart_ndims($0)')],
    'MPI_Dist_graph_create_adjacent': [(2, '$1'), (3, 'ghost::mpi::weights_len($3, $1)'),
                                       (5, '$4'), (6, 'ghost::mpi::weights_len($6, $4)')],
    'MPI_Dist_graph_create': [(2, '$1'), (3, '$1'), (4, 'ghost::mpi::int_sum($3, $1)'),
                              (5, 'ghost::mpi::weights_len($5, ghost::mpi::int_sum($3, $1))')],
    'MPI_Group_incl': [(2, '$1')],
    'MPI_Group_excl': [(2, '$1')],
    'MPI_Group_range_incl': [(2, '$1')],
    'MPI_Group_range_excl': [(2, '$1')],
    'MPI_File_open': [(1, 'strlen($1) + 1')],
    'MPI_File_set_view': [(4, 'strlen($4) + 1')],
}

# Quiescence (upper/quiesce.h). Blocking collectives advance their communicator's collective clock
# at the gate; '_c' (large count) variants follow their base name.
# Calls that set or delete an attribute: (kind of the object, set?).
ATTR_CALLS = {
    'MPI_Comm_set_attr': ('comm', True), 'MPI_Attr_put': ('comm', True),
    'MPI_Type_set_attr': ('datatype', True), 'MPI_Win_set_attr': ('win', True),
    'MPI_Comm_delete_attr': ('comm', False), 'MPI_Attr_delete': ('comm', False),
    'MPI_Type_delete_attr': ('datatype', False), 'MPI_Win_delete_attr': ('win', False),
}
# Keyvals are virtual (upper/keyvals.cpp): a restart makes them again on the fresh lower half,
# where their numbers may differ. Creations: the kind of object they are for.
KEYVAL_CREATE = {'MPI_Comm_create_keyval': 'comm', 'MPI_Keyval_create': 'comm',
                 'MPI_Type_create_keyval': 'datatype', 'MPI_Win_create_keyval': 'win'}
KEYVAL_FREE = {'MPI_Comm_free_keyval', 'MPI_Keyval_free', 'MPI_Type_free_keyval',
               'MPI_Win_free_keyval'}
KEYVAL_PARAMS = {'keyval', 'comm_keyval', 'type_keyval', 'win_keyval'}
COLLECTIVES = {'MPI_Barrier', 'MPI_Bcast', 'MPI_Reduce', 'MPI_Allreduce', 'MPI_Gather', 'MPI_Gatherv',
               'MPI_Scatter', 'MPI_Scatterv', 'MPI_Allgather', 'MPI_Allgatherv', 'MPI_Alltoall',
               'MPI_Alltoallv', 'MPI_Alltoallw', 'MPI_Reduce_scatter', 'MPI_Reduce_scatter_block',
               'MPI_Scan', 'MPI_Exscan', 'MPI_Neighbor_allgather', 'MPI_Neighbor_allgatherv',
               'MPI_Neighbor_alltoall', 'MPI_Neighbor_alltoallv', 'MPI_Neighbor_alltoallw',
               'MPI_Comm_dup', 'MPI_Comm_dup_with_info', 'MPI_Comm_split', 'MPI_Comm_split_type',
               'MPI_Comm_create', 'MPI_Cart_create', 'MPI_Cart_sub', 'MPI_Graph_create',
               'MPI_Dist_graph_create', 'MPI_Dist_graph_create_adjacent', 'MPI_Intercomm_merge',
               'MPI_Intercomm_create', 'MPI_Win_create', 'MPI_Win_allocate', 'MPI_Win_allocate_shared',
               'MPI_Win_create_dynamic', 'MPI_File_open'}
# Nonblocking collectives: their start advances the communicator's collective clock like a
# blocking collective (MPI orders both kinds in one sequence per communicator), so that at a
# checkpoint every member has started the same ones; the drain then completes them
# (p2p.cpp, collectives_complete) and a restart finds them complete.
NONBLOCKING_COLLECTIVES = {
    'MPI_Ibarrier', 'MPI_Ibcast', 'MPI_Ireduce', 'MPI_Iallreduce', 'MPI_Igather', 'MPI_Igatherv',
    'MPI_Iscatter', 'MPI_Iscatterv', 'MPI_Iallgather', 'MPI_Iallgatherv', 'MPI_Ialltoall',
    'MPI_Ialltoallv', 'MPI_Ialltoallw', 'MPI_Ireduce_scatter', 'MPI_Ireduce_scatter_block',
    'MPI_Iscan', 'MPI_Iexscan', 'MPI_Ineighbor_allgather', 'MPI_Ineighbor_allgatherv',
    'MPI_Ineighbor_alltoall', 'MPI_Ineighbor_alltoallv', 'MPI_Ineighbor_alltoallw',
    'MPI_Comm_idup', 'MPI_Comm_idup_with_info'}
COLLECTIVES |= NONBLOCKING_COLLECTIVES
# Communicator creations whose result is collective over their first communicator argument: the new
# communicator's clock id is chained from it. Others get an untracked comm_info.
COMM_CHAINED = {'MPI_Win_create', 'MPI_Win_allocate', 'MPI_Win_allocate_shared', 'MPI_Win_create_dynamic',
                'MPI_Comm_dup', 'MPI_Comm_dup_with_info', 'MPI_Comm_idup', 'MPI_Comm_idup_with_info',
                'MPI_Comm_split', 'MPI_Comm_split_type',
                'MPI_Comm_create', 'MPI_Cart_create', 'MPI_Cart_sub', 'MPI_Graph_create',
                'MPI_Dist_graph_create', 'MPI_Dist_graph_create_adjacent'}
# Intercommunicator creations: their result gets a clock (quiesce.cpp, comm_created: an id from
# its members, the same in both groups) but their record is not chained (no tombstone: the
# creation's members are not its first communicator's).
INTER_CREATIONS = {'MPI_Intercomm_create', 'MPI_Intercomm_merge'}
# Windows (upper/quiesce.cpp, win_*): a window made by MPI_Win_create has a collective clock of its
# own, advanced by its fences, so that at a checkpoint every member has passed the
# same ones; one-sided operations and synchronisations are noted after they return, so that a
# checkpoint can tell whether an access or exposure epoch still holds operations not completed:
# event name, and the argument (an expression of the call's parameters) it gets.
WIN_COLLECTIVES = {'MPI_Win_fence'}
WIN_EVENTS = {
    'MPI_Put': ('rma', 'target_rank'), 'MPI_Get': ('rma', 'target_rank'),
    'MPI_Accumulate': ('rma', 'target_rank'), 'MPI_Get_accumulate': ('rma', 'target_rank'),
    'MPI_Fetch_and_op': ('rma', 'target_rank'), 'MPI_Compare_and_swap': ('rma', 'target_rank'),
    'MPI_Rput': ('rma', 'target_rank'), 'MPI_Rget': ('rma', 'target_rank'),
    'MPI_Raccumulate': ('rma', 'target_rank'), 'MPI_Rget_accumulate': ('rma', 'target_rank'),
    'MPI_Win_fence': ('fence', 'assert'), 'MPI_Win_lock': ('lock', 'rank'),
    'MPI_Win_unlock': ('unlock', 'rank'), 'MPI_Win_lock_all': ('lock_all', 'assert'),
    'MPI_Win_unlock_all': ('unlock_all', '0'), 'MPI_Win_flush': ('flush', 'rank'),
    'MPI_Win_flush_all': ('flush_all', '0'), 'MPI_Win_start': ('start', '0'),
    'MPI_Win_complete': ('complete', '0'), 'MPI_Win_post': ('post', '0'),
    'MPI_Win_wait': ('wait', '0'), 'MPI_Win_test': ('wait', '0'),
}
# Files (upper/files.h): a file opened over a communicator with a clock has a clock of its own,
# advanced by its collective calls (closing it too); split collectives are counted at their begin.
FILE_COLLECTIVES = {
    'MPI_File_close', 'MPI_File_set_view', 'MPI_File_set_size', 'MPI_File_preallocate',
    'MPI_File_sync', 'MPI_File_set_atomicity', 'MPI_File_set_info', 'MPI_File_seek_shared',
    'MPI_File_read_all', 'MPI_File_write_all', 'MPI_File_read_at_all', 'MPI_File_write_at_all',
    'MPI_File_read_ordered', 'MPI_File_write_ordered', 'MPI_File_read_all_begin',
    'MPI_File_write_all_begin', 'MPI_File_read_at_all_begin', 'MPI_File_write_at_all_begin',
    'MPI_File_read_ordered_begin', 'MPI_File_write_ordered_begin', 'MPI_File_iread_all',
    'MPI_File_iwrite_all', 'MPI_File_iread_at_all', 'MPI_File_iwrite_at_all'}
# What a checkpoint must know of a file's use (files.h, file_event), noted after a successful call.
FILE_EVENTS = {}
for f in ('read_all', 'write_all', 'read_at_all', 'write_at_all', 'read_ordered', 'write_ordered'):
    FILE_EVENTS['MPI_File_%s_begin' % f] = ['split_begin']
    FILE_EVENTS['MPI_File_%s_end' % f] = ['split_end']
for f in ('read_shared', 'write_shared', 'iread_shared', 'iwrite_shared', 'read_ordered',
          'write_ordered', 'read_ordered_begin', 'write_ordered_begin', 'seek_shared'):
    FILE_EVENTS.setdefault('MPI_File_' + f, []).append('shared')
# Nonblocking file operations: complete by themselves, so the drain completes them (as a
# nonblocking collective) and a restart finds them complete.
FILE_NONBLOCKING = {'MPI_File_iread', 'MPI_File_iwrite', 'MPI_File_iread_at', 'MPI_File_iwrite_at',
                    'MPI_File_iread_all', 'MPI_File_iwrite_all', 'MPI_File_iread_at_all',
                    'MPI_File_iwrite_at_all', 'MPI_File_iread_shared', 'MPI_File_iwrite_shared'}
# Calls that set something on an object a restart must set again (vobj.h, record::setting): a
# record is made as for a creation and handed over after a successful call.
SETTINGS = {'MPI_File_set_view': 'file_view_set', 'MPI_Comm_set_errhandler': 'comm_errhandler_set',
            'MPI_Win_set_errhandler': 'win_errhandler_set', 'MPI_Win_attach': 'win_attach_set'}

# Point-to-point calls whose lower call is made by a hand-written function in upper/p2p.cpp
# (counting, test loops with safe points, drained messages first). It is called as
# q_<name>(fn, <lower arguments>..., <upper values of the handle parameters>...).
CUSTOM = {'MPI_Send', 'MPI_Ssend', 'MPI_Rsend', 'MPI_Bsend', 'MPI_Isend', 'MPI_Issend', 'MPI_Irsend',
          'MPI_Ibsend', 'MPI_Recv', 'MPI_Irecv', 'MPI_Sendrecv', 'MPI_Probe', 'MPI_Iprobe',
          'MPI_Mprobe', 'MPI_Improbe', 'MPI_Mrecv', 'MPI_Imrecv', 'MPI_Wait', 'MPI_Waitall',
          'MPI_Waitany', 'MPI_Waitsome', 'MPI_Test', 'MPI_Testall', 'MPI_Testany', 'MPI_Testsome',
          'MPI_Send_init', 'MPI_Ssend_init', 'MPI_Rsend_init', 'MPI_Bsend_init', 'MPI_Recv_init',
          'MPI_Start', 'MPI_Startall', 'MPI_Request_get_status', 'MPI_Cancel', 'MPI_Request_free',
          'MPI_Sendrecv_replace'}


# Calls the upper half answers from what it holds (upper/answers.h): the wrapper asks
# u_<name>(<upper arguments>..., &result) after the gate and before anything else; false means
# "not known here": the lower call as usual.
UPPER_ANSWERS = {'MPI_Alloc_mem', 'MPI_Free_mem',
                 'MPI_Comm_rank', 'MPI_Comm_size', 'MPI_Initialized', 'MPI_Finalized',
                 'MPI_Query_thread', 'MPI_Is_thread_main', 'MPI_Type_size',
                 'MPI_Type_get_extent', 'MPI_Type_get_true_extent', 'MPI_Get_count', 'MPI_Wtime',
                 'MPI_Wtick', 'MPI_Win_shared_query', 'MPI_Win_shared_query_c'}


# Memory the program gets from MPI is upper memory (upper/mem.cpp): MPI_Win_allocate allocates it
# and makes the window with MPI_Win_create over it (its record keeps the memory's address where
# the baseptr argument was: a restart makes the window again over it); MPI_Win_free releases it.
WIN_ALLOCATE = {'MPI_Win_allocate': 'MPI_Win_create', 'MPI_Win_allocate_c': 'MPI_Win_create_c'}
# A window of memory shared by the ranks of a node (upper/shared_win.cpp): the layer maps the node's
# segment itself, in upper memory, and makes the window with MPI_Win_create over each rank's part
# (the record keeps that part's address where the baseptr argument was); MPI_Win_shared_query is
# answered in the upper half, MPI_Win_free unmaps the segment.
SHARED_ALLOCATE = {'MPI_Win_allocate_shared': 'MPI_Win_create',
                   'MPI_Win_allocate_shared_c': 'MPI_Win_create_c'}
FN_INDEX = {}  # MPI name -> index in the function table, filled before generating


def subst(expr, d):
    lcomm = [p.name for p in d.params if p.core == 'MPI_Comm' and p.stars == 0]
    expr = expr.replace('$lcomm', 'l_' + lcomm[0] if lcomm else '$lcomm')
    expr = re.sub(r'\$(\d+)', lambda m: d.params[int(m.group(1))].name, expr)
    if '$' in expr:
        raise GenError('%s: cannot resolve count expression %s' % (d.name, expr))
    return expr


class GenError(Exception):
    pass


def base_api(api):
    return api[:-2] if api.endswith('_c') else api


def classify(d):
    """Returns a list of (param, role, extra) or raises GenError."""
    api = base_api(d.api)
    out = []
    for pos, p in enumerate(d.params):
        core, stars = p.core, p.stars + (1 if p.array else 0) + len(p.inner_dims)
        if core in HANDLES:
            k = HANDLES[core]
            if p.array:
                key = (d.api, pos) if (d.api, pos) in ARRAYS else (api, pos)
                if key not in ARRAYS:
                    raise GenError('%s: handle array %s (parameter %d) has no count rule' % (d.name, p.name, pos))
                role, cnt = ARRAYS[key]
                out.append((p, 'arr_' + role, (k, subst(cnt, d))))
            elif stars == 0:
                out.append((p, 'in', k))
            elif stars == 1 and p.const:
                raise GenError('%s: const handle pointer %s' % (d.name, p.name))
            elif stars == 1:
                if api in FREE:
                    out.append((p, 'free', k))
                elif api in KEEP:
                    out.append((p, 'keep', k))
                elif api in SETTLE or (api, k) in SETTLE:
                    out.append((p, 'settle', k))
                else:
                    out.append((p, 'out', k))
            else:
                raise GenError('%s: parameter %s has %d levels of indirection' % (d.name, p.name, stars))
        elif core in CALLBACKS:
            out.append((p, 'callback', CALLBACKS[core]))
        elif core in UNSUPPORTED_CALLBACKS:
            out.append((p, 'unsupported', None))
        elif core == 'int' and p.name in KEYVAL_PARAMS and stars == 0:
            out.append((p, 'keyval', None))
        elif core == 'int' and p.name in KEYVAL_PARAMS and stars == 1 and api in KEYVAL_CREATE:
            out.append((p, 'keyval_out', KEYVAL_CREATE[api]))
        elif core == 'int' and p.name in KEYVAL_PARAMS and stars == 1 and api in KEYVAL_FREE:
            out.append((p, 'keyval_free', None))
        elif core in PLAIN:
            if re.search(r'weights$', p.name) and core == 'int':
                out.append((p, 'weights', None))
            else:
                out.append((p, 'plain', None))
        else:
            raise GenError('%s: unknown parameter type %r (%s)' % (d.name, core, p.text))
    return out


def ret_kind(d):
    r = re.sub(r'\bconst\b', '', d.ret).strip()
    if r in HANDLES:
        return HANDLES[r]
    if r in PLAIN or r in ('int', 'double'):
        return None
    raise GenError('%s: unknown return type %r' % (d.name, d.ret))


def creates(d, roles):
    api = base_api(d.api)
    outs = [x for x in roles if x[1] == 'out' and x[2] not in ('request', 'message')]
    persistent = api.endswith('_init') and api not in ('MPI_Init',)
    return bool(outs) or persistent or api in SETTINGS


def gen_wrapper(d, idx, fl):
    api = base_api(d.api)
    roles = [] if (d.api in UNSUPPORTED_FUNCS or api in UNSUPPORTED_FUNCS) else classify(d)
    ret = d.ret.strip()
    params = ', '.join(p.decl() for p in d.params) + (', ...' if getattr(d, 'variadic', False) else '')
    if not d.params and not getattr(d, 'variadic', False):
        params = 'void'
    L = []
    L.append('extern "C" GHOST_EXPORT %s %s(%s) {' % (ret, d.name, params))
    if d.api in UNSUPPORTED_FUNCS or base_api(d.api) in UNSUPPORTED_FUNCS or any(r[1] == 'unsupported' for r in roles):
        L.append('  return ghost::mpi::unsupported("%s");' % d.api)
        L.append('}')
        L.append('extern "C" GHOST_EXPORT %s %s(%s) __attribute__((weak, alias("%s")));' % (ret, d.api, params, d.name))
        return L
    L.append('  using fn_t = %s (*)(%s);' % (ret, ', '.join(
        (re.sub(r'\s+', ' ', p.base) + ' *' * (1 if p.array else 0) +
         ''.join('(*)' for _ in [])) if not p.inner_dims else '%s (*)[%s]' % (p.base, ']['.join(p.inner_dims))
        for p in d.params) or 'void'))
    pre, args, post = [], [], []
    # keep_alive needs the new request's upper handle: after its adopt, whatever the parameter order.
    keep_posts = []
    record = creates(d, roles)
    if record:
        pre.append('  ghost::mpi::record* rec_ = ghost::mpi::record_begin(%d, %d);' % (idx, len(d.params)))
        for i, (p, role, extra) in enumerate(roles):
            if p.array or p.inner_dims:
                pre.append('  if (rec_) rec_->args[%d] = (uint64_t)(uintptr_t)(const void*)%s;' % (i, p.name))
            else:
                pre.append('  if (rec_) rec_->args[%d] = ghost::mpi::raw_word(%s);' % (i, p.name))
        if api in COMM_CHAINED:
            parent = [q.name for q, r2, e2 in roles if r2 == 'in' and e2 == 'comm'][0]
            pre.append('  ghost::mpi::record_set_parent(rec_, (uintptr_t)%s);' % parent)
        elif api == 'MPI_Comm_create_group':
            pre.append('  const uint64_t group_key_ = ghost::mpi::record_set_group_key(rec_, (uintptr_t)%s, %s, %s);'
                       % (d.params[0].name, d.params[1].name, d.params[2].name))
        for pos, cnt in RECORD_ARRAYS.get(api, []):
            if pos >= len(d.params) or not (d.params[pos].array or d.params[pos].stars):
                raise GenError('%s: record rule names parameter %d, not an array' % (d.name, pos))
            pname = d.params[pos].name
            pre.append('  if (rec_ && %s) ghost::mpi::record_add_array(rec_, %d, %s, sizeof(%s[0]) * (size_t)(%s));'
                       % (pname, pos, pname, pname, subst(cnt, d)))
    has_req_out = any(r[1] == 'out' and r[2] == 'request' for r in roles)
    args_by_param = {}
    # Scalar input handles first: count expressions of handle arrays use the lower communicator.
    order = [x for x in roles if x[1] == 'in'] + [x for x in roles if x[1] != 'in']
    for p, role, extra in order:
        args = []
        args_by_param[id(p)] = args
        n = p.name
        K = 'ghost::mpi::kind::%s' % (extra[0] if isinstance(extra, tuple) else extra)
        if role == 'plain' or role == 'unsupported':
            args.append(n)
        elif role == 'weights':
            args.append('ghost::mpi::xlate_weights(%s)' % n)
        elif role == 'keyval':
            args.append('ghost::mpi::keyval_lower(%s)' % n)
        elif role == 'keyval_out':
            fns = [q.name for q, r2, _ in roles if r2 == 'callback']
            pre.append('  int l_%s = 0;' % n)
            args.append('%s ? &l_%s : nullptr' % (n, n))
            post.append('  if (%s && rc_ == MPI_SUCCESS) *%s = ghost::mpi::keyval_adopt(ghost::mpi::kind::%s, %d, l_%s, (void *)%s, (void *)%s, %s);'
                        % (n, n, extra, idx, n, fns[0], fns[1], d.params[-1].name))
        elif role == 'keyval_free':
            pre.append('  int l_%s = %s ? ghost::mpi::keyval_lower(*%s) : 0;' % (n, n, n))
            args.append('%s ? &l_%s : nullptr' % (n, n))
            post.append('  if (%s && rc_ == MPI_SUCCESS) { ghost::mpi::keyval_drop(*%s); *%s = l_%s; }' % (n, n, n, n))
        elif role == 'in':
            pre.append('  %s l_%s = ghost::mpi::to_lower<%s>(%s);' % (p.core, n, K, n))
            args.append('l_' + n)
        elif role in ('out',):
            pre.append('  %s l_%s = (%s)ghost::mpi::g_lower_null[(int)%s];' % (p.core, n, p.core, K))
            args.append('%s ? &l_%s : nullptr' % (n, n))
            rec = 'rec_' if (record and extra not in ('request', 'message')) or (record and extra == 'request' and base_api(d.api).endswith('_init')) else 'nullptr'
            # A failed call that set its output to the null handle (MPI_Comm_dup whose attribute
            # copy callback failed must give MPI_COMM_NULL) gives the program the upper null.
            post.append('  if (%s && rc_ != MPI_SUCCESS && (uintptr_t)l_%s == ghost::mpi::g_lower_null[(int)%s]) '
                        '*%s = (%s)ghost::mpi::g_upper_null[(int)%s];' % (n, n, K, n, p.core, K))
            if rec == 'rec_' and base_api(d.api) == 'MPI_Comm_get_parent':
                # No parent (a job mpirun started): nothing to rebuild, and not a collective
                # whose null result every member must replay.
                post.append('  if (rc_ == MPI_SUCCESS && (uintptr_t)l_%s == ghost::mpi::g_lower_null[(int)%s]) '
                            '{ delete rec_; rec_ = nullptr; }' % (n, K))
            if rec == 'rec_' and api == 'MPI_Comm_group':
                post.append('  if (%s && rc_ == MPI_SUCCESS) ghost::mpi::record_group_members(rec_, l_%s);' % (n, n))
            known = ', true' if base_api(d.api) == 'MPI_Comm_get_parent' else ''  # (handles.h)
            post.append('  if (%s && rc_ == MPI_SUCCESS) *%s = ghost::mpi::adopt<%s>(l_%s, %s%s);' % (n, n, K, n, rec, known))
            if rec == 'rec_':
                post.append('  else if (rec_) { delete rec_; }')
                post.append('  rec_ = nullptr;')
        elif role in ('free', 'keep', 'settle'):
            pre.append('  %s l_%s = %s ? ghost::mpi::to_lower<%s>(*%s) : (%s)0;' % (p.core, n, n, K, n, p.core))
            args.append('%s ? &l_%s : nullptr' % (n, n))
            if role == 'free':
                post.append('  if (%s && rc_ == MPI_SUCCESS) ghost::mpi::drop<%s>(*%s);' % (n, K, n))
            elif role == 'settle':
                post.append('  if (%s) ghost::mpi::settle<%s>(*%s, l_%s);' % (n, K, n, n))
        elif role.startswith('arr_'):
            k, cnt = extra
            K = 'ghost::mpi::kind::%s' % k
            r = role[4:]
            persist = has_req_out and r == 'in'
            pre.append('  int n_%s = %s ? (int)(%s) : 0;' % (n, n, cnt))
            pre.append('  ghost::mpi::handle_array<%s> l_%s(n_%s, %s);' % (p.core, n, n, 'true' if persist else 'false'))
            if r in ('in', 'keep', 'settle'):
                pre.append('  for (int i_ = 0; i_ < n_%s; i_++) l_%s[i_] = ghost::mpi::to_lower<%s>(%s[i_]);' % (n, n, K, n))
            else:
                pre.append('  for (int i_ = 0; i_ < n_%s; i_++) l_%s[i_] = (%s)ghost::mpi::g_lower_null[(int)%s];' % (n, n, p.core, K))
            args.append('%s ? l_%s.data() : nullptr' % (n, n))
            if r == 'settle':
                post.append('  for (int i_ = 0; i_ < n_%s; i_++) ghost::mpi::settle<%s>(%s[i_], l_%s[i_]);' % (n, K, n, n))
            elif r == 'out' and api in ('MPI_Type_get_contents', 'MPI_Type_get_contents_c'):
                # A member type may be one the program has freed (MPI keeps it in the parent): a
                # record says how to ask the rebuilt parent for it again after a restart.
                maxes = [q.name for q in d.params[1:] if q.name.startswith('max')]
                post.append('  if (rc_ == MPI_SUCCESS) { const uint64_t max_[] = {%s};' % ', '.join('(uint64_t)' + m for m in maxes))
                post.append('    for (int i_ = 0; i_ < n_%s; i_++) %s[i_] = ghost::mpi::adopt<%s>(l_%s[i_], '
                            'ghost::mpi::contents_record(%d, ghost::mpi::raw_word(%s), max_, %d, i_)); }'
                            % (n, n, K, n, idx, d.params[0].name, len(maxes)))
            elif r == 'out':
                post.append('  if (rc_ == MPI_SUCCESS) for (int i_ = 0; i_ < n_%s; i_++) %s[i_] = ghost::mpi::adopt<%s>(l_%s[i_], nullptr);' % (n, n, K, n))
            if persist:
                keep_posts.append('  if (rc_ == MPI_SUCCESS && request) ghost::mpi::keep_alive<ghost::mpi::kind::request>(*request, l_%s.release());' % n)
        elif role == 'callback':
            pre.append('  auto l_%s = ghost::mpi::wrap_%s(%s);' % (n, extra, n))
            args.append('l_' + n)
        else:
            raise GenError('%s: internal: role %s' % (d.name, role))
    args = [args_by_param[id(p)][0] for p, _, _ in roles]
    # Arrays passed by decl with inner dims (ranges[][3]) are plain ints; nothing to do.
    comms = [p.name for p, role, extra in roles if role == 'in' and extra == 'comm']
    if api in COLLECTIVES and not comms:
        raise GenError('%s: collective without a communicator parameter' % d.name)
    files = [p for p in d.params if p.core == 'MPI_File']
    if api in WIN_COLLECTIVES:
        L.append('  ghost::mpi::gate gate_(%d, (uintptr_t)win, false, ghost::mpi::clock_kind::window);' % idx)
    elif api in FILE_COLLECTIVES:
        f = files[0]
        fh = '(%s ? (uintptr_t)*%s : 0)' % (f.name, f.name) if f.stars else '(uintptr_t)' + f.name
        L.append('  ghost::mpi::gate gate_(%d, %s, false, ghost::mpi::clock_kind::file);' % (idx, fh))
    elif api == 'MPI_Win_free':
        # Synchronizing in both MPIs (the lower call waits for every member): collective on the
        # window's clock, so that a checkpoint runs the members that have not entered it forward
        # into it, instead of waiting for a member held inside it until the quiescence times out.
        w = d.params[0].name
        L.append('  ghost::mpi::gate gate_(%d, %s ? (uintptr_t)*%s : 0, false, ghost::mpi::clock_kind::window);'
                 % (idx, w, w))
    elif api == 'MPI_Comm_free':
        # Collective on the communicator's clock when it was made over two groups (free_clock).
        c = d.params[0].name
        L.append('  ghost::mpi::gate gate_(%d, ghost::mpi::free_clock(%s ? (uintptr_t)*%s : 0));' % (idx, c, c))
    elif api == 'MPI_Comm_disconnect':
        # Collective, and synchronizing (Open MPI: a barrier): on the communicator's clock always.
        c = d.params[0].name
        L.append('  ghost::mpi::gate gate_(%d, %s ? (uintptr_t)*%s : 0);' % (idx, c, c))
    elif api == 'MPI_Comm_create_group':
        # Collective over its group only: no clock counts it, but the thread is inside a creation
        # (the coordinator's rounds let the group's other members through to it).
        L.append('  ghost::mpi::gate gate_(%d, 0, true);' % idx)
    else:
        creates_clock = api in COMM_CHAINED or api in INTER_CREATIONS or api == 'MPI_File_open'
        L.append('  ghost::mpi::gate gate_(%d%s%s);' % (idx, ', (uintptr_t)%s' % comms[0] if api in COLLECTIVES else '',
                                                       ', true' if creates_clock else ''))
    m = re.match(r'^MPI_(Comm|Type|Group|Request|Op|Info|Win|File|Errhandler|Message)_(c2f|f2c)$', d.api)
    if m and (fl == 'openmpi' or m.group(1) == 'File'):
        # Fortran handles of created objects are the layer's (handles.h, fortran_of): the same
        # after a restart. Predefined ones are the library's. MPICH's handles are integers, its
        # Fortran ones the same numbers (no call), except a file's: ROMIO hands out an index in a
        # table of its own, which a restart's fresh lower half does not have.
        k = {'Type': 'datatype'}.get(m.group(1), m.group(1).lower())
        h = d.params[0].name
        if m.group(2) == 'c2f':
            L.append('  { MPI_Fint f_; if (ghost::mpi::fortran_of<ghost::mpi::kind::%s>(%s, &f_)) return f_; }' % (k, h))
        else:
            L.append('  { %s u_; if (ghost::mpi::from_fortran<ghost::mpi::kind::%s>(%s, &u_)) return u_; }' % (ret, k, h))
    if d.api in UPPER_ANSWERS:
        if ret == 'double':
            L.append('  { double a_; if (ghost::mpi::u_%s(&a_)) return a_; }' % api[4:])
        else:
            L.append('  { int a_; if (ghost::mpi::u_%s(%s, &a_)) return a_; }'
                     % (d.api[4:], ', '.join(p.name for p in d.params)))
    # After the gate: a thread held at its safe point across a checkpoint and restart must take the
    # new lower half's TLS and handles, not the ones it read before it stopped.
    L.append('  const uintptr_t lfs_ = ghost::mpi::thread_lower_fs();')
    if api == 'MPI_Finalize':
        L.append('  ghost::mpi::quiesce_before_finalize();')
    if api in CUSTOM and d.api != api:
        # Large-count point-to-point calls go straight to the lower half, uncounted: a message of
        # theirs may be in flight at any checkpoint, which is refused from then on.
        L.append('  ghost::mpi::note_uncarried("%s");' % d.api)
    if api == 'MPI_Grequest_complete':
        L.append('  ghost::mpi::request_mark_generalized_complete(%s);' % d.params[0].name)
    if api == 'MPI_Session_init':
        # The layer binds the lower half and its communicators at MPI_Init: a sessions-only
        # program would call into an unbound lower half. Refused in one line instead.
        L.append('  if (!ghost::mpi::world_initialized())')
        L.append('    return ghost::mpi::unsupported("MPI_Session_init before MPI_Init (the sessions model)");')
    L += pre
    rk = ret_kind(d)
    call = '((fn_t)ghost::mpi::g_fns[%d])(%s)' % (idx, ', '.join(args))
    if ret == 'void':
        raise GenError('%s returns void' % d.name)
    L.append('  %s rc_;' % ret)
    if api in ('MPI_Init', 'MPI_Init_thread'):
        # The lower half always runs at MPI_THREAD_MULTIPLE (answers.cpp, lower_init): the layer's
        # own thread calls it during a quiescence while an application thread may be inside it.
        L.append('  (void)sizeof(fn_t);')
        L.append('  int app_level_ = MPI_THREAD_SINGLE;')
        L.append('  rc_ = ghost::mpi::lower_init(lfs_, %s, %s, %s, &app_level_);'
                 % (d.params[0].name, d.params[1].name,
                    'required' if api == 'MPI_Init_thread' else 'MPI_THREAD_SINGLE'))
        if api == 'MPI_Init_thread':
            post.append('  if (rc_ == MPI_SUCCESS && provided) *provided = app_level_;')
    elif api in CUSTOM and d.api == api:
        upper = [p.name for p, role, extra in roles if role not in ('plain', 'weights', 'unsupported', 'keyval')]
        L.append('  (void)lfs_;')
        L.append('  (void)sizeof(fn_t);')
        L.append('  rc_ = ghost::mpi::q_%s(ghost::mpi::g_fns[%d], %s);' % (api[4:], idx, ', '.join(args + upper)))
    elif d.api in WIN_ALLOCATE:
        # Upper memory first (malloc: before the lower FS is loaded), then the window over it.
        size, disp, base = d.params[0].name, d.params[1].name, d.params[4].name
        L.append('  void *wmem_ = ghost::mpi::upper_alloc(%s);' % size)
        L.append('  if (!wmem_) { delete rec_; return %s < 0 ? MPI_ERR_SIZE : MPI_ERR_NO_MEM; }' % size)
        L.append('  if (rec_) rec_->args[4] = (uint64_t)(uintptr_t)wmem_;')
        L.append('  (void)sizeof(fn_t);')
        L.append('  {')
        L.append('    ghost::mpi::lower_call lc_(lfs_);')
        L.append('    rc_ = ((int (*)(void *, MPI_Aint, %s, MPI_Info, MPI_Comm, MPI_Win *))ghost::mpi::g_fns[%d])'
                 '(wmem_, %s, %s, %s);' % (d.params[1].core, FN_INDEX[WIN_ALLOCATE[d.api]], size, disp,
                                          ', '.join(args[2:4] + args[5:])))
        L.append('  }')
        L.append('  if (rc_ == MPI_SUCCESS) *(void **)%s = wmem_;' % base)
        L.append('  else ghost::mpi::upper_free(wmem_);')
    elif d.api in SHARED_ALLOCATE:
        # The node's segment first (collective over the communicator), then the window over this
        # rank's part of it.
        size, disp, base = d.params[0].name, d.params[1].name, d.params[4].name
        L.append('  void *wmem_ = nullptr;')
        L.append('  ghost::mpi::shared_segment *seg_ = nullptr;')
        L.append('  rc_ = ghost::mpi::shared_win_allocate(%s, (MPI_Aint)%s, l_info, l_comm, lfs_, &wmem_, &seg_);'
                 % (size, disp))
        L.append('  if (rc_ != MPI_SUCCESS) { delete rec_; rec_ = nullptr; }')
        L.append('  if (rec_) rec_->args[4] = (uint64_t)(uintptr_t)wmem_;')
        L.append('  (void)sizeof(fn_t);')
        L.append('  if (rc_ == MPI_SUCCESS) {')
        L.append('    ghost::mpi::lower_call lc_(lfs_);')
        L.append('    rc_ = ((int (*)(void *, MPI_Aint, %s, MPI_Info, MPI_Comm, MPI_Win *))ghost::mpi::g_fns[%d])'
                 '(wmem_, %s, %s, %s);' % (d.params[1].core, FN_INDEX[SHARED_ALLOCATE[d.api]], size, disp,
                                          ', '.join(args[2:4] + args[5:])))
        L.append('  }')
        L.append('  if (rc_ == MPI_SUCCESS) *(void **)%s = wmem_;' % base)
        L.append('  else if (seg_) ghost::mpi::shared_win_release(seg_);')
        post.append('  if (%s && rc_ == MPI_SUCCESS) ghost::mpi::shared_win_adopted((uintptr_t)*%s, seg_);'
                    % (d.params[-1].name, d.params[-1].name))
    else:
        if api in ('MPI_Comm_free', 'MPI_Comm_disconnect'):
            # ... and then waits for every member (a barrier), so that at a checkpoint either all
            # have freed it or none has.
            c = d.params[0].name
            L.append('  if (gate_.coll) {')
            L.append('    ghost::mpi::lower_call lc_(lfs_);')
            L.append('    ((int (*)(MPI_Comm))ghost::mpi::g_fns[%d])(l_%s);' % (FN_INDEX['MPI_Barrier'], c))
            L.append('  }')
        if api == 'MPI_Comm_create_group':
            L.append('  ghost::mpi::comm_group_materialize(l_%s, lfs_);' % d.params[0].name)
        if api == 'MPI_Win_free':
            L.append('  void *wmem_ = ghost::mpi::win_upper_memory(%s ? (uintptr_t)*%s : 0);'
                     % (d.params[0].name, d.params[0].name))
            post.append('  if (rc_ == MPI_SUCCESS && wmem_) ghost::mpi::upper_free(wmem_);')
            L.append('  ghost::mpi::shared_segment *seg_ = ghost::mpi::shared_win_of(%s ? (uintptr_t)*%s : 0);'
                     % (d.params[0].name, d.params[0].name))
            post.append('  if (rc_ == MPI_SUCCESS && seg_) ghost::mpi::shared_win_release(seg_);')
        if api in OWED_FREE:
            f = [(q, e) for q, r2, e in roles if r2 == 'free'][0]
            L.append('  if (%s && ghost::mpi::lower_ref_owed<ghost::mpi::kind::%s>(*%s)) {'
                     % (f[0].name, f[1], f[0].name))
            L.append('    rc_ = MPI_SUCCESS;')
            L.append('  } else {')
        else:
            L.append('  {')
        L.append('    ghost::mpi::lower_call lc_(lfs_);')
        L.append('    rc_ = %s;' % call)
        L.append('  }')
    for p, role, extra in roles:
        if role == 'out' and extra == 'comm':
            parent = comms[0] if ((api in COMM_CHAINED or api in INTER_CREATIONS) and comms) else None
            made = ('comm_created_pending' if api in NONBLOCKING_COLLECTIVES else
                    'comm_created_dup' if api in ('MPI_Comm_dup', 'MPI_Comm_dup_with_info') else
                    'comm_created_group' if api == 'MPI_Comm_create_group' else
                    'comm_created')
            how = ('group_key_' if api == 'MPI_Comm_create_group' else
                   '(uintptr_t)' + parent if parent else '0')
            post.append('  if (%s && rc_ == MPI_SUCCESS) ghost::mpi::%s((uintptr_t)*%s, %s);'
                        % (p.name, made, p.name, how))
    post += keep_posts
    if api in ('MPI_Win_create', 'MPI_Win_allocate', 'MPI_Win_allocate_shared', 'MPI_Win_create_dynamic'):
        w = d.params[-1].name
        post.append('  if (%s && rc_ == MPI_SUCCESS) ghost::mpi::win_created((uintptr_t)*%s, (uintptr_t)%s);'
                    % (w, w, comms[0]))
    if api == 'MPI_File_open':
        post.append('  if (%s && rc_ == MPI_SUCCESS) ghost::mpi::file_created((uintptr_t)*%s, (uintptr_t)%s);'
                    % (files[0].name, files[0].name, comms[0]))
    for ev in FILE_EVENTS.get(api, []):
        post.append('  if (rc_ == MPI_SUCCESS) ghost::mpi::file_note((uintptr_t)%s, ghost::mpi::file_event::%s);'
                    % (files[0].name, ev))
    if api in FILE_NONBLOCKING:
        rq = [p.name for p in d.params if p.core == 'MPI_Request'][0]
        post.append('  if (rc_ == MPI_SUCCESS && %s) ghost::mpi::request_mark_io(*%s);' % (rq, rq))
    if api in SETTINGS:
        post.append('  if (rc_ == MPI_SUCCESS) { ghost::mpi::%s((uintptr_t)%s, rec_); rec_ = nullptr; }'
                    % (SETTINGS[api], d.params[0].name))
    if api == 'MPI_Win_get_attr':
        post.append('  if (rc_ == MPI_SUCCESS && %s && *%s) ghost::mpi::win_flavor_attr((uintptr_t)%s, %s, %s);'
                    % (d.params[3].name, d.params[3].name, d.params[0].name, d.params[1].name, d.params[2].name))
    if api == 'MPI_Win_detach':
        post.append('  if (rc_ == MPI_SUCCESS) ghost::mpi::win_detached((uintptr_t)%s, (uintptr_t)%s);'
                    % (d.params[0].name, d.params[1].name))
    if api in WIN_EVENTS:
        ev, arg = WIN_EVENTS[api]
        cond = 'rc_ == MPI_SUCCESS' + (' && flag && *flag' if api == 'MPI_Win_test' else '')
        post.append('  if (%s) ghost::mpi::win_note((uintptr_t)win, ghost::mpi::win_event::%s, %s);' % (cond, ev, arg))
    if api in NONBLOCKING_COLLECTIVES:
        post.append('  if (rc_ == MPI_SUCCESS && request) ghost::mpi::request_mark_collective(*request, (uintptr_t)%s);' % comms[0])
    if api in ATTR_CALLS:
        # Attributes live in the lower half: a checkpoint refuses while one is set (restart.cpp).
        k, is_set = ATTR_CALLS[api]
        post.append('  if (rc_ == MPI_SUCCESS) ghost::mpi::attr_note(ghost::mpi::kind::%s, (uintptr_t)%s, %s, %s);'
                    % (k, d.params[0].name, d.params[1].name, 'true' if is_set else 'false'))
    if api == 'MPI_Buffer_attach':
        # The lower half's attachment is lost at a restart: restart.cpp attaches it again.
        post.append('  if (rc_ == MPI_SUCCESS) ghost::mpi::bsend_buffer_note(%s, (long long)%s);'
                    % (d.params[0].name, d.params[1].name))
    if api == 'MPI_Buffer_detach':
        post.append('  if (rc_ == MPI_SUCCESS) ghost::mpi::bsend_buffer_note(nullptr, 0);')
    if api == 'MPI_Grequest_start':
        post.append('  if (rc_ == MPI_SUCCESS && request) ghost::mpi::request_mark_generalized(*request);')
    if api == 'MPI_T_init_thread':
        post.append('  if (rc_ == MPI_SUCCESS) ghost::mpi::note_mpit(1);')
    if api == 'MPI_T_finalize':
        post.append('  if (rc_ == MPI_SUCCESS) ghost::mpi::note_mpit(-1);')
    if api in ('MPI_Init', 'MPI_Init_thread'):
        post.append('  if (rc_ == MPI_SUCCESS) ghost::mpi::quiesce_after_init(app_level_);')
        post.append('  if (rc_ == MPI_SUCCESS) ghost::mpi::note_initialized(app_level_);')
    if api == 'MPI_Finalize':
        post.append('  if (rc_ == MPI_SUCCESS) ghost::mpi::note_finalized();')
    if rk:
        L.append('  return ghost::mpi::lookup_or_adopt<ghost::mpi::kind::%s>(rc_);' % rk)
    else:
        if ret == 'int':
            L += post
            if record:
                L.append('  delete rec_;')
        elif post:
            raise GenError('%s: translation after a non-int result' % d.name)
        L.append('  return rc_;')
    L.append('}')
    L.append('extern "C" GHOST_EXPORT %s %s(%s) __attribute__((weak, alias("%s")));' % (ret, d.api, params, d.name))
    return L


def lib_symbols(lib):
    out = subprocess.run(['readelf', '--dyn-syms', '-W', lib], check=True, capture_output=True, text=True).stdout
    syms = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) < 8 or f[6] == 'UND' or f[3] not in ('FUNC', 'OBJECT', 'IFUNC'):
            continue
        name = f[7].split('@')[0]
        syms[name] = (f[3], int(f[2], 0) if f[2].startswith('0x') else int(f[2]), int(f[1], 16))
    return syms


def predefined_objects(fl, mpi_h, syms):
    """(symbol, kind or None, role) for every predefined object the application may hold."""
    objs = []
    if fl == 'openmpi':
        text = open(mpi_h).read()
        seen = set()
        for typ, sym in re.findall(r'OMPI_PREDEFINED_GLOBAL\(\s*(MPI_\w+)\s*,\s*(\w+)\s*\)', text):
            if sym in seen:
                continue
            seen.add(sym)
            if typ not in HANDLES:
                raise GenError('predefined %s has unknown handle type %s' % (sym, typ))
            if sym not in syms:
                raise GenError('predefined %s is not exported by the library' % sym)
            objs.append((sym, HANDLES[typ], 'handle'))
        for sym in sorted(set(re.findall(r'\b(OMPI_C_MPI_\w+_FN)\b', text))):
            if sym in syms:
                objs.append((sym, None, 'function'))
    else:
        for sym in ('MPI_UNWEIGHTED', 'MPI_WEIGHTS_EMPTY'):
            objs.append((sym, None, 'value'))
        objs.append(('MPIR_Dup_fn', None, 'function'))
    return objs


NULLS = {'openmpi': {'comm': 'ompi_mpi_comm_null', 'group': 'ompi_mpi_group_null',
                     'datatype': 'ompi_mpi_datatype_null', 'op': 'ompi_mpi_op_null',
                     'errhandler': 'ompi_mpi_errhandler_null', 'info': 'ompi_mpi_info_null',
                     'win': 'ompi_mpi_win_null', 'file': 'ompi_mpi_file_null',
                     'request': 'ompi_request_null', 'message': 'ompi_message_null'},
         'mpich': {'comm': 'MPI_COMM_NULL', 'group': 'MPI_GROUP_NULL', 'datatype': 'MPI_DATATYPE_NULL',
                   'op': 'MPI_OP_NULL', 'errhandler': 'MPI_ERRHANDLER_NULL', 'info': 'MPI_INFO_NULL',
                   'win': 'MPI_WIN_NULL', 'file': 'MPI_FILE_NULL', 'request': 'MPI_REQUEST_NULL',
                   'message': 'MPI_MESSAGE_NULL', 'session': 'MPI_SESSION_NULL'}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--flavour', required=True, choices=['openmpi', 'mpich'])
    ap.add_argument('--preprocessed', required=True)
    ap.add_argument('--mpi-h', required=True)
    ap.add_argument('--lib', required=True)
    ap.add_argument('--out', required=True)
    a = ap.parse_args()
    fl = a.flavour
    try:
        decls = mpi_decls.parse(open(a.preprocessed).read())
        syms = lib_symbols(a.lib)
        names = sorted(n for n in decls if n in syms)
        missing = sorted(n for n in decls if n not in syms)
        objs = predefined_objects(fl, a.mpi_h, syms)
        W = ['// Generated by mpi-layer/gen/gen_wrappers.py for %s. Do not edit.' % fl,
             '#include "wrapper_support.h"', '#include "p2p.h"', '#include "answers.h"', '',
             '#pragma GCC diagnostic ignored "-Wdeprecated-declarations"',
             '#pragma GCC diagnostic ignored "-Wunused-parameter"',
             '#pragma GCC diagnostic ignored "-Wattribute-alias"', '']
        FN_INDEX.update({decls[n].api: i for i, n in enumerate(names)})
        for i, n in enumerate(names):
            W += gen_wrapper(decls[n], i, fl)
            W.append('')
        W.append('namespace ghost::mpi {')
        W.append('const char* const g_flavour_name = "%s";' % fl)
        W.append('const size_t g_nfns = %d;' % len(names))
        W.append('const char* const g_fn_names[] = {%s};' % ', '.join('"%s"' % decls[n].api for n in names))
        W.append('bool flavour_bind(const ghost_handoff* h, const char** why) {')
        W.append('  if (h->nfns != %d || h->nobjs != %d) { *why = "function table size mismatch (lower program from another build)"; return false; }' % (len(names), len(objs)))
        for i, (sym, k, role) in enumerate(objs):
            if role == 'handle':
                W.append('  if (!bind_handle("%s", kind::%s, h->objs[%d], why)) return false;' % (sym, k, i))
            elif role == 'function':
                W.append('  bind_function("%s", h->objs[%d]);' % (sym, i))
            else:
                W.append('  bind_value("%s", h->objs[%d]);' % (sym, i))
        for k, sym in NULLS[fl].items():
            if fl == 'openmpi':
                idx = [i for i, o in enumerate(objs) if o[0] == sym]
                if not idx:
                    raise GenError('null handle %s not among predefined objects' % sym)
                W.append('  if (!bind_null(kind::%s, "%s", h->objs[%d], why)) return false;' % (k, sym, idx[0]))
            else:
                W.append('  g_upper_null[(int)kind::%s] = g_lower_null[(int)kind::%s] = (uintptr_t)%s;' % (k, k, sym))
        W.append('  return true;')
        W.append('}')
        W.append('}  // namespace ghost::mpi')
        open(a.out + '/wrappers.cpp', 'w').write('\n'.join(W) + '\n')

        T = ['/* Generated by mpi-layer/gen/gen_wrappers.py for %s. Do not edit. */' % fl, '#include <stddef.h>']
        for n in names:
            T.append('extern void %s(void);' % n)
        for sym, k, role in objs:
            T.append('extern void %s(void);' % sym if role == 'function' else 'extern char %s[];' % sym)
        T.append('void *const ghost_lower_fns[] = {')
        T += ['  (void *)%s,' % n for n in names]
        T.append('};')
        T.append('const size_t ghost_lower_nfns = %d;' % len(names))
        T.append('void *const ghost_lower_objs[] = {')
        T += ['  (void *)%s,' % sym for sym, k, role in objs]
        T.append('};')
        T.append('const size_t ghost_lower_nobjs = %d;' % len(objs))
        open(a.out + '/lower_table.c', 'w').write('\n'.join(T) + '\n')

        S = ['/* Generated by mpi-layer/gen/gen_wrappers.py for %s: the upper-half stand-in for the real' % fl,
             ' * library. Functions only report that they were reached; objects have the real sizes so that',
             ' * copy relocations in executables match. Do not edit. */',
             '#include <stdlib.h>', '#include <unistd.h>', '#include <string.h>',
             'static void ghost_stub_die(const char *name) {',
             '  static const char a[] = "ghost-mpi: ";',
             '  static const char b[] = " reached the stub MPI library (not forwarded to the lower half; is libghost_mpi preloaded?)\\n";',
             '  (void)!write(2, a, sizeof a - 1); (void)!write(2, name, strlen(name)); (void)!write(2, b, sizeof b - 1);',
             '  _exit(1);', '}']
        specials = {}
        if fl == 'mpich':
            specials = {'MPI_UNWEIGHTED': 'MPIR_C_MPI_UNWEIGHTED', 'MPI_WEIGHTS_EMPTY': 'MPIR_C_MPI_WEIGHTS_EMPTY'}
        for name in sorted(syms):
            typ, size, addr = syms[name]
            if name in specials:
                continue
            if typ in ('FUNC', 'IFUNC'):
                S.append('void %s(void) { ghost_stub_die("%s"); }' % (name, name))
            else:
                align = 1
                while align < 64 and addr % (align * 2) == 0:
                    align *= 2
                S.append('char %s[%d] __attribute__((aligned(%d)));' % (name, max(size, 1), align))
        for var, target in specials.items():
            S.append('void *%s = (void *)%s;' % (var, target))
        open(a.out + '/stub.c', 'w').write('\n'.join(S) + '\n')
        sys.stderr.write('gen_wrappers: %s: %d functions wrapped, %d predefined objects, %d declared but not '
                         'exported (%s)\n' % (fl, len(names), len(objs), len(missing), ' '.join(missing[:8])))
    except (mpi_decls.ParseError, GenError) as e:
        sys.stderr.write('gen_wrappers: error: %s\n' % e)
        sys.exit(1)


if __name__ == '__main__':
    main()
