"""The first process of a sandbox: sets up the run, starts the code, reaps, reports, and exits.

Runs as ``python -I -S inside.py JOB_FD RESULT_FD`` with the standard library only (the
package is not importable inside the sandbox). Inside bubblewrap it is PID 1 of the run's
PID namespace (``--as-pid-1``), still root but without any namespace of the host: orphans are
re-parented to it and reaped here, and when it exits the kernel kills every process left in
the namespace, so nothing a run starts outlives it. With ``--unsafe-no-isolation`` it runs on
the host instead, as a child subreaper: it adopts and kills the code's orphans, but code running
with its uid can kill it first.

The job arrives as a ``marshal`` dict on JOB_FD (read to EOF; no module to import, so a fast
start), sent by the server once this process sits in the run's cgroups. It names the code, the
files to write, the identity and rlimits of the code, and the files to fetch. The code runs as
``python <workdir>/tmpXXXXXXXX.py`` in a child that drops to the job's uid/gid after setting its
rlimits. The result, a ``marshal`` dict on RESULT_FD, gives the child's exit status, its wall
time (fork to exit) and CPU time, and the fetched files.
"""

import marshal
import os
import resource
import signal
import sys
import time

MARSHAL_VERSION = 4  # read by every Python 3 since 3.4, so the server and this interpreter may differ
RLIMITS = {
    "AS": resource.RLIMIT_AS,
    "CPU": resource.RLIMIT_CPU,
    "NPROC": resource.RLIMIT_NPROC,
    "FSIZE": resource.RLIMIT_FSIZE,
    "NOFILE": resource.RLIMIT_NOFILE,
    "CORE": resource.RLIMIT_CORE,
}


def read_all(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def set_oom_score(value):
    try:
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write(str(value))
    except OSError:
        pass


def inside_workdir(workdir, relative):
    """The real path of ``relative`` under ``workdir``, or None when it resolves outside."""
    path = os.path.realpath(os.path.join(workdir, relative))
    return path if path.startswith(workdir.rstrip("/") + "/") else None


def write_files(workdir, files, uid, gid):
    for relative, content in files.items():
        path = inside_workdir(workdir, relative)
        if path is None:
            raise ValueError(f"file path {relative!r} leaves the working folder")
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(content)
        if uid is not None:
            os.chown(path, uid, gid)
            while parent != workdir and parent.startswith(workdir):
                os.chown(parent, uid, gid)
                parent = os.path.dirname(parent)


def fetch_files(workdir, names, cap, left_out=None):
    """Contents of the requested regular files under workdir, ``cap`` bytes in all; ``left_out`` (a dict) gets
    each requested path that is not returned, with the reason."""
    fetched = {}
    left_out = {} if left_out is None else left_out
    for relative in names:
        joined = os.path.join(workdir, relative)
        path = inside_workdir(workdir, relative)
        if os.path.islink(joined):
            left_out[relative] = "a symbolic link (not followed)"
            continue
        if path is None or not os.path.exists(path):
            left_out[relative] = "not found"
            continue
        if not os.path.isfile(path):
            left_out[relative] = "not a regular file (a FIFO, a device or a folder)"
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as err:
            left_out[relative] = f"unreadable ({err.strerror})"
            continue
        try:
            data = os.read(fd, cap + 1)
        finally:
            os.close(fd)
        if len(data) > cap:
            left_out[relative] = "over the size cap of fetched files"
            break
        cap -= len(data)
        fetched[relative] = data
    return fetched


def start_code(job, script, workdir):
    """Fork the code's process: new session, rlimits, niceness, then the job's uid/gid, then exec."""
    pid = os.fork()
    if pid:
        return pid
    try:
        os.setsid()
        set_oom_score(500)  # the code, not this process, is the one to kill when memory runs out
        for name, value in job["rlimits"].items():
            hard = value + 1 if name == "CPU" else value
            resource.setrlimit(RLIMITS[name], (value, hard))
        if job.get("nice"):
            os.nice(job["nice"])
        if job.get("uid") is not None:
            os.setgroups([])
            os.setgid(job["gid"])
            os.setuid(job["uid"])
        os.chdir(workdir)
        os.closerange(3, 1 << 16)  # only stdin, stdout and stderr go on to the code
        env = dict(job["env"])
        env.setdefault("HOME", workdir)
        python = job["python"]
        os.execve(python, [python, script], env)
    except BaseException as err:
        try:
            os.write(2, f"sandbox: could not start the code: {err}\n".encode())
        finally:
            os._exit(127)


def reap_until(child):
    """Reap every child until ``child`` exits; return its (status, rusage, wall seconds)."""
    start = time.monotonic()
    while True:
        try:
            pid, status, usage = os.wait4(-1, 0)
        except ChildProcessError:
            return None, None, time.monotonic() - start
        if pid == child:
            return status, usage, time.monotonic() - start


def become_subreaper():
    """Outside a namespace, adopt the code's orphans (prctl PR_SET_CHILD_SUBREAPER) so they can be reaped."""
    import ctypes  # outside a sandbox only: imports cost start-up time

    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)


def own_children():
    children = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as handle:
                children += [int(pid) for pid in handle.read().split()]
        except OSError:
            pass
    return children


def kill_leftovers(child, as_init):
    """End every other process of the run and reap it.

    As PID 1 of the run's namespace: ``kill(-1)`` reaches all of them. Outside (unsafe mode): the
    code's process group, then every child this subreaper adopted, until none is left.
    """
    deadline = time.monotonic() + 2.0
    while True:
        try:
            if as_init:
                os.kill(-1, signal.SIGKILL)  # every process of the namespace but this one
            else:
                os.killpg(child, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if not as_init:
            for pid in own_children():
                try:  # noqa: SIM105 - importing contextlib would cost start-up time
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return
        if time.monotonic() > deadline:
            return
        time.sleep(0.002)


def main(argv):
    job_fd, result_fd = int(argv[1]), int(argv[2])
    os.set_inheritable(result_fd, False)
    as_init = os.getpid() == 1
    if not as_init:
        become_subreaper()
    set_oom_score(-1000)
    job = marshal.loads(read_all(job_fd))
    os.close(job_fd)
    result = {"ok": False}
    workdir = job.get("workdir")
    made_workdir = False
    try:
        if not workdir:
            import tempfile  # outside a sandbox only: imports cost start-up time

            workdir = os.path.realpath(tempfile.mkdtemp(prefix="spo-sandbox-run-"))
            made_workdir = True
        uid, gid = job.get("uid"), job.get("gid")
        if uid is not None and made_workdir:
            os.chown(workdir, uid, gid)
        write_files(workdir, job.get("files", {}), uid, gid)
        script = os.path.join(workdir, f"tmp{os.urandom(4).hex()}.py")
        with open(script, "w", encoding="utf-8", errors="surrogatepass") as handle:
            handle.write(job["code"])
        os.chmod(script, 0o644)
        child = start_code(job, script, workdir)
        status, usage, wall = reap_until(child)
        kill_leftovers(child, as_init)
        result = {"ok": True, "elapsed": wall, "exit_code": None, "signal": None, "cpu": None, "maxrss_kb": None}
        if status is not None:
            if os.WIFSIGNALED(status):
                result["signal"] = os.WTERMSIG(status)
            else:
                result["exit_code"] = os.waitstatus_to_exitcode(status)
            result["cpu"] = usage.ru_utime + usage.ru_stime
            result["maxrss_kb"] = usage.ru_maxrss
        left_out = {}
        result["files"] = fetch_files(workdir, job.get("fetch_files", []), job.get("fetch_cap", 1 << 24), left_out)
        result["files_left_out"] = left_out
    except Exception as err:
        result = {"ok": False, "error": f"{type(err).__name__}: {err}"}
    finally:
        if made_workdir:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    write_all(result_fd, marshal.dumps(result, MARSHAL_VERSION))
    os.close(result_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
