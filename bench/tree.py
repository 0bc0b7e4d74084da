"""Removing a benchmark's temporary tree without ever entering a mount:
the same rule as the launcher's (a subhost's `live` or a staged copy of `/`
left mounted below a scratch directory must not be walked into)."""

import errno
import os


def mount_points():
    """Mount points of this mount namespace, unescaped."""
    points = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split(" ")[4]
            for esc, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
                point = point.replace(esc, ch)
            points.add(point)
    return points


def remove_tree_mount_free(path):
    """Removes PATH and everything in it, provided all of it is on PATH's
    own mount: every directory is opened relative to its parent without
    following a link, and one on another device or listed as a mount point
    stops the removal with an OSError, nothing from it down touched."""
    points = mount_points()
    real = os.path.realpath(path)
    top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        if real in points:
            raise OSError(errno.EBUSY, "%s is a mount point: nothing was removed" % real)
        _empty(top, os.fstat(top).st_dev, real, points)
    finally:
        os.close(top)
    os.rmdir(path)


def _empty(fd, dev, where, points):
    for entry in list(os.scandir(fd)):
        here = os.path.join(where, entry.name)
        if entry.is_dir(follow_symlinks=False):
            sub = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            try:
                if os.fstat(sub).st_dev != dev or here in points:
                    raise OSError(errno.EBUSY, "%s is a mount point: nothing from it down was removed" % here)
                _empty(sub, dev, here, points)
            finally:
                os.close(sub)
            os.rmdir(entry.name, dir_fd=fd)
        else:
            os.unlink(entry.name, dir_fd=fd)


def remove_or_keep(path, who):
    """remove_tree_mount_free, saying on stderr what was kept and why."""
    try:
        remove_tree_mount_free(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        import sys

        print(f"{who}: {path} kept: {e}", file=sys.stderr)
