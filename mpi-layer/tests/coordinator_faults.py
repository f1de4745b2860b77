#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The job coordinator under faults, with a real mpirun job (quiesce_mix):
  wrong_secret        a connection to the coordinator's TCP port with a wrong secret is refused and
                      logged by ghostrun; the job goes on and passes
  killed_coordinator  ghostrun is killed with SIGKILL: the ranks run on and pass, `ghost status JOB`
                      and `ghost quiesce JOB` say so in one line and fail
  bad_job             `ghost quiesce` of a job that does not exist / is not a job id: one line, status 1
  command_at_end      command connections open when the job ends (one sent its CHECKPOINT, one sent
                      nothing yet) are answered (ERROR ...), not closed unanswered; a checkpoint of
                      a ghostrun whose job socket is gone says the job ended
Usage: coordinator_faults.py GHOSTRUN GHOST PROGRAM FLAVOUR SUBTEST"""
import os
import signal
import socket
import subprocess
import sys
import time


def fail(msg):
    print('FAIL: ' + msg)
    sys.exit(1)


def start_job(ghostrun, prog, np=2, iters=600):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT='1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM='1',
               OMPI_MCA_rmaps_base_oversubscribe='1')
    p = subprocess.Popen([ghostrun, '-np', str(np), prog, str(iters)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, text=True)
    line = p.stderr.readline()
    if not line.startswith('ghostrun: job '):
        p.kill()
        fail('ghostrun printed %r instead of its job id' % line)
    return p, line.split()[2]


def ranks_of(ghost, job, np, deadline=20):
    end = time.time() + deadline
    while time.time() < end:
        out = subprocess.run([ghost, 'status', job], capture_output=True, text=True, timeout=30).stdout
        rows = [l.split() for l in out.splitlines() if l.strip().startswith('rank ')]
        if len(rows) == np:
            mpirun = int(out.split('mpirun pid ')[1].split()[0])
            return mpirun, [int(r[3]) for r in rows]
        time.sleep(0.1)
    fail('the ranks did not register with the coordinator within %d s' % deadline)


def finish(p, timeout=120):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        fail('the job did not finish within %d s' % timeout)
    return p.returncode, out, err


def wrong_secret(ghostrun, ghost, prog):
    p, job = start_job(ghostrun, prog)
    _, pids = ranks_of(ghost, job, 2)
    env = open('/proc/%d/environ' % pids[0], 'rb').read().split(b'\0')
    coord = [e.split(b'=', 1)[1].decode() for e in env if e.startswith(b'GHOST_JOB_COORD=')][0]
    port = int(coord.rsplit(':', 1)[1])
    s = socket.create_connection(('127.0.0.1', port), timeout=10)
    s.sendall(('HELLO %s %s 0 2 1 intruder\n' % (job, '0' * 64)).encode())
    reply = s.makefile().readline()
    s.close()
    if not reply.startswith('REFUSED'):
        fail('a wrong secret was answered %r' % reply)
    # a connection that never greets is dropped as well (bounded)
    s2 = socket.create_connection(('127.0.0.1', port), timeout=10)
    s2.settimeout(10)
    try:
        s2.recv(100)
    except socket.timeout:
        fail('a silent connection was kept open for more than 10 s')
    s2.close()
    rc, out, err = finish(p)
    if 'refused a connection from 127.0.0.1' not in err or 'wrong secret' not in err or \
            'no greeting' not in err:
        fail('ghostrun did not log the refused connection: %s' % err[-2000:])
    if rc != 0 or out.count(' PASS\n') != 2:
        fail('the job did not pass after the refused connection (rc %d): %s' % (rc, out[-2000:]))
    st = subprocess.run([ghost, 'status', job], capture_output=True, text=True, timeout=30)
    if st.returncode == 0:
        fail('ghost status of an ended job succeeded: %s' % st.stdout)
    print('OK: wrong secret refused and logged; the job passed')


def killed_coordinator(ghostrun, ghost, prog):
    p, job = start_job(ghostrun, prog, iters=600)
    mpirun, pids = ranks_of(ghost, job, 2)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    for cmd in (['status', job], ['quiesce', job]):
        r = subprocess.run([ghost] + cmd, capture_output=True, text=True, timeout=30)
        lines = r.stderr.strip().splitlines()
        if r.returncode == 0 or len(lines) != 1 or 'coordinator' not in lines[0] or \
                'not running' not in lines[0]:
            fail('ghost %s after the coordinator died: rc %d, %r' % (cmd[0], r.returncode, r.stderr))
    # The ranks run on: their output still arrives through mpirun's pipe.
    out = ''
    end = time.time() + 120
    while time.time() < end:
        chunk = p.stdout.readline()
        if not chunk:
            break
        out += chunk
    if out.count(' PASS\n') != 2:
        fail('the ranks did not finish after the coordinator died: %r' % out[-2000:])
    err = p.stderr.read()
    if 'the job coordinator is gone' not in err:
        fail('no rank said the coordinator was gone: %s' % err[-2000:])
    for pid in [mpirun] + pids:
        try:
            os.kill(pid, 0)
            time.sleep(2)
            os.kill(pid, 0)
            fail('pid %d still runs after the job printed PASS' % pid)
        except ProcessLookupError:
            pass
    print('OK: the ranks ran on without their coordinator; ghost said so in one line')


def command_at_end(ghostrun, ghost, prog):
    p, job = start_job(ghostrun, prog, iters=200)
    mpirun, _ = ranks_of(ghost, job, 2)
    rdir = os.environ.get('GHOST_RUNTIME_DIR') or (
        os.environ['XDG_RUNTIME_DIR'] + '/ghost' if os.environ.get('XDG_RUNTIME_DIR')
        else '/tmp/ghost-%d' % os.getuid())
    # Stop the launcher so that the job ends while the commands wait unread; the ranks run on.
    os.kill(p.pid, signal.SIGSTOP)
    conns = []
    for request in (b'CHECKPOINT 0 10000 10000 -\n', b''):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(60)
        c.connect('%s/job-%s.sock' % (rdir, job))
        c.sendall(request)
        conns.append(c)
    # A ghostrun whose job socket is not there (gone as it exits; here another runtime directory):
    # a checkpoint says the job ended, not that pid JOB is not running under ghost.
    r = subprocess.run([ghost, 'checkpoint', job], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, GHOST_RUNTIME_DIR=rdir + '/elsewhere'))
    if r.returncode == 0 or 'the job ended' not in r.stderr or len(r.stderr.splitlines()) != 1:
        fail('ghost checkpoint of an ending job (no socket): rc %d, %r' % (r.returncode, r.stderr))
    # quiesce_mix prints its checksum and PASS, then finalizes: wait for mpirun to end.
    end = time.time() + 120
    while time.time() < end:
        try:
            os.kill(mpirun, 0)
            if open('/proc/%d/stat' % mpirun).read().split(')')[1].split()[0] == 'Z':
                break
        except ProcessLookupError:
            break
        time.sleep(0.1)
    os.kill(p.pid, signal.SIGCONT)
    rc, out, err = finish(p)
    if rc != 0 or out.count(' PASS\n') != 2:
        fail('the job did not pass (rc %d): %s' % (rc, (out + err)[-2000:]))
    for i, c in enumerate(conns):
        try:
            reply = c.makefile().readline()
        except OSError as e:
            reply = 'error %s' % e
        c.close()
        if not reply.startswith('ERROR '):
            fail('command connection %d at the job\'s end was answered %r' % (i, reply))
    print('OK: commands open at the job\'s end were answered that it ended')


def bad_job(ghost):
    for arg, want in (('99999999', 'no job 99999999'), ('abc', 'is not a job id')):
        r = subprocess.run([ghost, 'quiesce', arg], capture_output=True, text=True, timeout=30)
        lines = r.stderr.strip().splitlines()
        if r.returncode == 0 or len(lines) != 1 or want not in lines[0] or not lines[0].startswith('ghost: '):
            fail('ghost quiesce %s: rc %d, %r' % (arg, r.returncode, r.stderr))
    print('OK: unknown jobs refused in one line')


def main():
    ghostrun, ghost, prog, flavour, sub = sys.argv[1:6]
    del flavour
    if sub == 'wrong_secret':
        wrong_secret(ghostrun, ghost, prog)
    elif sub == 'killed_coordinator':
        killed_coordinator(ghostrun, ghost, prog)
    elif sub == 'bad_job':
        bad_job(ghost)
    elif sub == 'command_at_end':
        command_at_end(ghostrun, ghost, prog)
    else:
        fail('unknown subtest ' + sub)


if __name__ == '__main__':
    main()
