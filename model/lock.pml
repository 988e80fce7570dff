/*
 * lock.pml: the dotlock protocol of lockfile/src/ as a Promela model,
 * checked by spin (model/check.sh).  model/README.md maps every part to
 * the code, states the properties, and says what is abstracted and why.
 *
 * A transition is one system call of the code, with the purely local
 * computation that follows it; where two share a transition, a comment
 * says why nobody can tell.  Each step cites the code it mirrors:
 *     @ FILE:FIRST-LAST FUNCTION "text found within those lines"
 * model/check.sh fails when the text is not within those lines of
 * lockfile/src/FILE, so the model cannot drift from the code unnoticed.
 *
 * Switches (-D; model/check.sh runs each configuration):
 *   NFS                  named temporary files, per-process lookup caches,
 *                        lost replies.  Default: a local file system, one
 *                        process with named temporary files, two with
 *                        anonymous ones.
 *   MAXFAULTS=n          faults per run (default 1): a kill, a stop past the
 *                        stale age, a lock nobody keeps fresh going stale
 *   LIVENESS             for the progress check: kills only, and waiting
 *                        lets a lock nobody keeps fresh go stale
 *   MOVE_ASIDE           Release::MoveAside (the helper's); default
 *                        Release::CheckThenUnlink (the library's)
 *   STOPS                stops past the stale age with CheckThenUnlink too
 *                        (its documented window; MOVE_ASIDE runs have them)
 *   SHARED_ASIDE         processes 0 and 1 move locks to one reserved aside
 *                        name (two helper sessions of one user, as the
 *                        helper did before it kept one per session)
 *   MUT_TRUST_LINK       mutant (a): link's reported result decides
 *   MUT_RELEASE_NOCHECK  mutant (b): release removes without its identity check
 *   MUT_BREAK_NOCHECK    mutant (c): break neither re-checks before its
 *                        rename nor compares what it moved before removing it
 *   MUT_NO_PUTBACK       mutant (d): a lock moved aside by mistake stays there
 *   MUT_NO_RECHECK       only the re-check before the rename removed (README:
 *                        not a mutant the properties can catch)
 *   BUG_OWN_WAIT         acquire without its own-file check: it judges, and
 *                        waits on, what may be its own file
 *   OPEN_WINDOW          without the assumption about the residual window
 *   LYING_SERVER         NFS: a server may report success for a link it did
 *                        not make
 *   CACHED_IDENTITY      NFS: the identity check's lookup of the name may be
 *                        answered by the lookup cache (fstatat, as the code
 *                        did before it used current_id)
 *   NO_AGING             (with LIVENESS) a lock nobody keeps fresh never
 *                        goes stale
 */

#define N     3        /* processes */
#define NI    10       /* inode numbers 1..NI-1 (three per process); 0 none */
#define NONE  0
#define UNK   255      /* lookup cache: nothing cached */

#ifndef MAXFAULTS
#define MAXFAULTS 1
#endif
#if defined(MOVE_ASIDE) || defined(STOPS)
#define WITH_STOPS
#endif
/* Claims the model itself relies on (README, "Inode numbers") are
   asserted in the runs of the real code; a mutant or a known limit may
   break them before it breaks a property. */
#if !defined(MUT_TRUST_LINK) && !defined(MUT_RELEASE_NOCHECK) && !defined(MUT_NO_RECHECK) && \
    !defined(MUT_BREAK_NOCHECK) && !defined(MUT_NO_PUTBACK) && \
    !defined(BUG_OWN_WAIT) && !defined(OPEN_WINDOW) && !defined(LYING_SERVER)
#define CHECKED_CLAIMS
#endif

/* The aside name a process moves locks to: its own fresh one, or with
   SHARED_ASIDE the reserved name processes 0 and 1 share. */
#ifdef SHARED_ASIDE
#define AS ((me == 1) -> 0 : me)
#define ASOF(p) (((p) == 1) -> 0 : (p))
#else
#define AS me
#define ASOF(p) (p)
#endif

/* ------------------------------------------------------------------ */
/* The directory: the server's truth                                   */
/* ------------------------------------------------------------------ */

byte lk;               /* inode the lock name names, NONE when free */
byte tname[N];         /* inode at p's named temporary file .lk<pid>.* */
byte aname[N];         /* inode at aside name a (ASOF(p) is p's) */
byte nlink[NI];        /* link count (names left behind included) */
byte creator[NI];      /* the process whose pid the content names */
bit  old[NI];          /* mtime older than the stale age, by the fs clock */

/* ------------------------------------------------------------------ */
/* The processes                                                       */
/* ------------------------------------------------------------------ */

bit  alive[N];
byte T[N];             /* p's open temporary file, later its lock: the fd */
bit  incs[N];          /* acquire returned and release has not begun */
bit  lapsed[N];        /* p's lock went stale (p was stopped past the stale
                          age) since p last found it its own */
bit  busy[N];          /* p is inside an operation: an acquisition attempt
                          (its link to its wait or success), a break, a
                          release */
byte judged[N];        /* the file p judged stale ... */
bit  jvalid[N];        /* ... with the mtime and content p judged (cleared
                          when the file is touched or freed) */
byte faults;           /* faults so far */
byte rel[N];           /* the lock p is releasing with CheckThenUnlink, its
                          descriptor closed: still p's until p unlinks it */

#ifdef NFS
byte cache[N];         /* p's lookup cache of the lock name: NONE (negative
                          entry), an inode, or UNK */
#define CACHE(p, v) cache[p] = v
#else
#define CACHE(p, v) skip   /* local: fstatat is the truth, nothing cached */
#endif

/* Ghost of the residual window (README): win[p] is the file p (breaking
   or releasing) moved aside although it is not the file it meant to
   remove, from its rename until its link back. */
byte win[N];

byte k;                /* loop scratch inside d_steps (0 outside them) */
byte g;

/* ------------------------------------------------------------------ */
/* Derived predicates and the properties                               */
/* ------------------------------------------------------------------ */

#define opened(i)  (T[0] == (i) || T[1] == (i) || T[2] == (i))
#define named(i)   (lk == (i) || tname[0] == (i) || tname[1] == (i) || \
                    tname[2] == (i) || aname[0] == (i) || aname[1] == (i) || \
                    aname[2] == (i))
#define exists(i)  (opened(i) || named(i))
#define inwin(i)   (win[0] == (i) || win[1] == (i) || win[2] == (i))

/* A lock that no process keeps fresh (has open, or is releasing): a dead
   holder's, or one linked back after its holder let go. */
#define UNKEPT (lk != NONE && !opened(lk) && !old[lk] && \
                rel[0] != lk && rel[1] != lk && rel[2] != lk)

/* p holds the lock: in its critical section, alive, and its lease has not
   lapsed.  A holder stopped for longer than the stale age may lose the
   lock to a breaker without knowing it: no lock judged stale by age can
   exclude that (DESIGN.md: a holder must refresh).  It holds again once
   a touch has found the name still its own. */
#define holds(p)   (alive[p] && incs[p] && !lapsed[p])

/* Property 1, mutual exclusion. */
#define MUTEX \
    (!(holds(0) && holds(1)) && !(holds(0) && holds(2)) && !(holds(1) && holds(2)))

/* Property 2, a held lock is never removed or renamed by another process:
   while p holds, the lock name names p's file, except while a process
   that moved it aside by mistake has not linked it back yet. */
#define INPLACE(p)  (!holds(p) || lk == T[p] || inwin(T[p]))
#define INPLACE_ALL (INPLACE(0) && INPLACE(1) && INPLACE(2))

/* Property 3, a process never waits on its own lock: an assertion at the
   wait.  Property 4, no deadlock: spin's invalid end states.  Property 5,
   progress: the LTL formula at the end. */

#ifdef OPEN_WINDOW
#define linkable(f) true
#else
/* The assumption (README, "The residual window"): while a file is aside
   by mistake, no other file is linked to the lock name. */
#define linkable(f) \
    ((me == 0 || win[0] == NONE || win[0] == (f)) && \
     (me == 1 || win[1] == NONE || win[1] == (f)) && \
     (me == 2 || win[2] == NONE || win[2] == (f)))
#endif

#ifdef NFS
#define ANON 0                 /* NFS and FUSE: named temporary files */
#else
#define ANON (me != 0)         /* local: process 0 with named ones
                                  (use_named_temps), the others anonymous */
#endif
/* @ tempfile.rs:289-295 links_when_locked "if self.name.is_some()" */
#define LINKS_WHEN_LOCKED (ANON -> 1 : 2)

/* ------------------------------------------------------------------ */
/* File system bookkeeping (parts of one transition)                   */
/* ------------------------------------------------------------------ */

/* The file's mtime changed: every judgement of it is void (the code
   compares mtimes, and a new mtime is a new value). */
inline newver(i) {
    k = 0;
    do
    :: k < N -> if :: judged[k] == i -> jvalid[k] = 0 :: else fi; k++
    :: else -> k = 0; break
    od
}

/* Forget inode i once no descriptor and no name the model tracks refers
   to it.  A name left behind (an aside name that was not linked back, a
   dead process's temporary name) keeps a real inode alive, but nobody
   looks it up again; forgetting it only lets its number be reused
   sooner, which the identity checks must survive anyway. */
inline gc(i) {
    if
    :: i != NONE && !exists(i) ->
        nlink[i] = 0; old[i] = 0; creator[i] = 0;
        k = 0;
        do
        :: k < N ->
            if :: judged[k] == i -> judged[k] = NONE; jvalid[k] = 0 :: else fi;
#ifdef NFS
            /* a cached name of a file that is gone answers ESTALE, and
               the kernel looks it up again */
            if :: cache[k] == i -> CACHE(k, UNK) :: else fi;
#endif
            k++
        :: else -> k = 0; break
        od
    :: else
    fi
}

/* A new inode number.  Each process draws from its own three (me+1,
   me+4, me+7), the lowest free one first, so a freed number is reused at
   once.  That numbers are not reused across processes loses nothing:
   where the code compares inode numbers alone, both files exist at that
   moment (asserted there), so no comparison can meet a reused number.
   (The release of 042c289 did not: see README.)  The bound of three
   files per process is asserted. */
inline alloc(i) {
    if
    :: !exists(1 + me) -> i = 1 + me
    :: else ->
        if
        :: !exists(4 + me) -> i = 4 + me
        :: else -> assert(!exists(7 + me)); i = 7 + me
        fi
    fi;
    nlink[i] = 0; old[i] = 0; creator[i] = me
}

mtype = { OK, EEXIST, ENOENT };

/* The anonymous file was linked once and has lost every name since:
   linkat through /proc/self/fd says ENOENT (I_LINKABLE is gone). */
#define LOST_ITS_NAME (ANON && t != NONE && nlink[t] == 0 && elinked)

/* The temporary file if there is none yet, and its refresh if it is old,
   as part of the link's transition: a file of one's own that is not the
   lock is seen by nobody until it is linked (README, "Atomicity").
   @ dotlock.rs:303 acquire_interleaved "let mut temp = TempFile::create(dir, me"
   @ tempfile.rs:135-161 create "let (name, fd) = match Self::create_anonymous"
   @ dotlock.rs:310 acquire_interleaved "temp.refresh_if_old()?;"
   @ tempfile.rs:244-252 refresh_if_old "futimens(self.fd(), &TimeSpec::UTIME_NOW" */
inline prepare() {
    if
    :: t == NONE ->
        alloc(t); T[me] = t; elinked = 0;
        if
        :: ANON -> nlink[t] = 0
        :: else -> nlink[t] = 1; tname[me] = t
        fi
    :: else
    fi;
    if :: old[t] -> old[t] = 0; newver(t) :: else fi;
    busy[me] = 1
}

/* ------------------------------------------------------------------ */
/* put_back                                                            */
/* ------------------------------------------------------------------ */

#ifdef SHARED_ASIDE
#define READ_ASIDE(v) skip       /* another session may change it: a step */
#else
#define READ_ASIDE(v) v = aname[AS]   /* our own private name: nobody else
                                         changes it, so no step of its own */
#endif

/* Rename `a`'s file onto the aside name; whatever was there loses that
   name (the reserved name is replaced). */
inline move_aside(a) {
    g = aname[a];
    if :: g != NONE -> nlink[g]-- :: else fi;
    aname[a] = lk; lk = NONE; gc(g); g = 0
}

/* The aside name is dropped from the model: its file keeps the link, but
   nobody looks the name up again (a fresh private name). A reserved name
   stays: the next move onto it replaces the file. */
#ifdef SHARED_ASIDE
#define PRIVATE_ASIDE (me == 2)
#else
#define PRIVATE_ASIDE true
#endif
inline forget_aside() {
    if :: PRIVATE_ASIDE -> at = aname[AS]; aname[AS] = NONE; gc(at); at = NONE :: else fi
}

/* Put the file at our aside name back under the lock name, never over
   another file; drop the aside name once it is back, or when the lock
   name already names that very file (its holder linked it again).
   @ stale.rs:427-453 put_back "pub(crate) fn put_back(" */
inline put_back() {
#ifndef NFS
    /* rename(aside, name, RENAME_NOREPLACE): one step, no extra link.
       @ stale.rs:442-443 put_back "rename_noreplace(dir, aside, name)" */
    if
    :: d_step { lk == NONE && aname[AS] != NONE && linkable(aname[AS]) ->
                lk = aname[AS]; aname[AS] = NONE; rep = 0; win[me] = NONE }
    :: d_step { lk != NONE && aname[AS] != NONE ->
                rep = EEXIST; win[me] = NONE; READ_ASIDE(at) }
    :: d_step { aname[AS] == NONE -> rep = ENOENT; win[me] = NONE }
    fi;
#else
    /* NFS: no RENAME_NOREPLACE (EINVAL, nothing done): link it back,
       then drop the aside name.
       @ stale.rs:445-447 put_back "linkat(dir, aside, dir, name" */
    if
    :: d_step { lk == NONE && aname[AS] != NONE && linkable(aname[AS]) ->
                lk = aname[AS]; nlink[lk]++; rep = OK; win[me] = NONE }
    :: d_step { lk == NONE && aname[AS] != NONE && linkable(aname[AS]) ->
                lk = aname[AS]; nlink[lk]++;               /* made, reply lost */
                rep = EEXIST; win[me] = NONE; READ_ASIDE(at) }
    :: d_step { lk != NONE && aname[AS] != NONE ->
                rep = EEXIST; win[me] = NONE; READ_ASIDE(at) }
    :: d_step { aname[AS] == NONE -> rep = ENOENT; win[me] = NONE }
    fi;
#endif
    if
    :: rep == 0 -> skip                  /* back under the lock name */
    :: else ->
        if
        :: rep == EEXIST ->
            /* Has its holder linked the very file again?
               @ stale.rs:450-454 put_back "(current_id(dir, aside), current_id(dir, name))" */
#ifdef SHARED_ASIDE
            d_step { at = aname[AS] };
#endif
#if defined(CHECKED_CLAIMS) && !defined(SHARED_ASIDE)
            d_step { ex = lk; CACHE(me, lk); assert(at == NONE || exists(at)) };
#else
            d_step { ex = lk; CACHE(me, lk) };
#endif
            if :: at != NONE && at == ex -> rep = OK :: else fi;
            at = NONE; ex = NONE
        :: else
        fi;
        /* @ stale.rs:454-461 put_back "if restored.is_ok() || relinked_by_holder" */
        if
        :: rep == OK ->
            d_step {           /* unlinkat of the aside name: what is there now */
                at = aname[AS];
                if :: at != NONE -> aname[AS] = NONE; nlink[at]--; gc(at) :: else fi;
                at = NONE; rep = 0
            }
        :: else -> d_step { rep = 0; forget_aside() }     /* left aside */
        fi
    fi
}

/* ------------------------------------------------------------------ */
/* A process: acquire, critical section, release, for ever             */
/* ------------------------------------------------------------------ */

proctype P(byte me) {
    byte t;            /* the temporary file (TempFile), later the lock */
    bit  elinked;      /* the kernel linked it once */
    mtype rep;         /* what a link reported */
    byte nl;           /* temp.stat().st_nlink */
    byte at;           /* the inode a lookup of a name gave */
    byte ex;           /* the inode inspect found */
    byte moved;        /* the inode this process moved aside */
    bit  same;         /* what was moved is what was judged */
    bit  touched;      /* this critical section refreshed the lock */

  {
    do
    :: skip;
       /* ============ acquire ============
          @ dotlock.rs:285-391 acquire_interleaved "pub fn acquire_interleaved(" */
retry: skip;
       /* @ dotlock.rs:311 acquire_interleaved "let linked = temp.link_to(name);"
          @ tempfile.rs:261-285 link_to "linkat(self.dir, temp.as_os_str(), self.dir, name" */
       if
       :: d_step { LOST_ITS_NAME ->
                   /* ENOENT: a fresh temporary file.
                      @ dotlock.rs:310-314 acquire_interleaved "if linked == Err(Errno::ENOENT) && temp.is_anonymous()" */
                   T[me] = NONE; gc(t); t = NONE; elinked = 0 };
           goto retry
       :: d_step { !LOST_ITS_NAME && lk == NONE && linkable(t) ->
                   prepare(); lk = t; nlink[t]++; elinked = 1; rep = OK; CACHE(me, t) }
       :: d_step { !LOST_ITS_NAME && lk != NONE ->
                   prepare(); rep = EEXIST }
#ifdef NFS
       :: d_step { lk == NONE && linkable(t) ->        /* made, reply lost */
                   prepare(); lk = t; nlink[t]++; elinked = 1; rep = EEXIST; CACHE(me, UNK) }
#ifdef LYING_SERVER
       :: d_step { lk != NONE ->                       /* not made, "success" */
                   prepare(); rep = OK; CACHE(me, t) }
#endif
#endif
       fi;

#ifdef MUT_TRUST_LINK
       if
       :: rep == OK -> rep = 0; goto ours
       :: else -> rep = 0
       fi;
#else
       /* The identity check.
          @ dotlock.rs:317 acquire_interleaved "let temp_st = temp.stat()?;" */
       d_step { rep = 0; nl = nlink[t] };
       /* Which file the name leads to now: `current_id`, a fresh open on
          NFS, so never the client's lookup cache.
          @ dotlock.rs:323 acquire_interleaved "let at_name = current_id(dir, name)?;" */
#if defined(NFS) && defined(CACHED_IDENTITY)
       /* as the code was: fstatat, which the lookup cache may answer
          (the cache the link's success reply filled) */
       if
       :: d_step { cache[me] != UNK -> at = cache[me] }
       :: d_step { at = lk; CACHE(me, lk) }
       fi;
#else
       d_step { at = lk; CACHE(me, lk) };
#endif
       /* @ dotlock.rs:327-328 acquire_interleaved "temp_st.st_nlink >= temp.links_when_locked()" */
       if
       :: at == t && nl >= LINKS_WHEN_LOCKED -> at = NONE; nl = 0; goto ours
       :: else -> at = NONE; nl = 0
       fi;
#endif

       /* Not ours: what is there (through a fresh open), and is it stale?
          @ dotlock.rs:356 acquire_interleaved "let Some(existing) = inspect(dir, name)? else"
          @ stale.rs:126-156 open_lock "let fd = match openat(dir, name, flags, Mode::empty())"
          @ dotlock.rs:370-376 acquire_interleaved "if let Some(reason) = judge_trusting("
          @ stale.rs:215-240 judge_trusting "ProcState::Gone => return Some(StaleReason::DeadProcess)" */
       d_step {
           ex = lk; CACHE(me, lk);
           if
#if defined(BUG_OWN_WAIT) || defined(MUT_TRUST_LINK)
           :: ex != NONE && (old[ex] || !alive[creator[ex]]) ->
#else
           :: ex != NONE && ex != t && (old[ex] || !alive[creator[ex]]) ->
#endif
               judged[me] = ex; jvalid[me] = 1
           :: else
           fi
       };
       if
       :: ex == NONE -> goto retry        /* released meanwhile: again now */
#if !defined(BUG_OWN_WAIT) && !defined(MUT_TRUST_LINK)
       /* Our own file, linked back by a breaker after our check (the
          trusting mutant has no identity checks at all).
          @ dotlock.rs:365-370 acquire_interleaved "if existing.version.id == ours" */
       :: ex == t -> ex = NONE; goto retry
#endif
       :: judged[me] != NONE -> ex = NONE; goto break_stale
       :: else -> goto wait
       fi;

wait: skip;
       /* @ dotlock.rs:393-398 acquire_interleaved "waiter.pause(Some(holder))?;" */
       assert(ex != t);                   /* property 3 */
#if defined(LIVENESS) && !defined(NO_AGING)
       /* Waiting long enough, a lock nobody keeps fresh goes stale. */
       d_step { ex = NONE; busy[me] = 0; if :: UNKEPT -> old[lk] = 1 :: else fi };
#else
       d_step { ex = NONE; busy[me] = 0 };
#endif
       goto retry;

break_stale: skip;
       /* @ dotlock.rs:388 acquire_interleaved "break_with(dir, name, &existing, &mover"
          @ stale.rs:327-360 break_with "pub(crate) fn break_with(" */
#if !defined(MUT_BREAK_NOCHECK) && !defined(MUT_NO_RECHECK)
       /* Re-check through a fresh open.
          @ stale.rs:345-349 break_with "Some(now) if now.version == judged.version" */
       d_step { CACHE(me, lk); same = (lk != NONE && lk == judged[me] && jvalid[me]) };
       if
       :: same -> same = 0
       :: else -> goto broke              /* Changed */
       fi;
#endif
       /* @ stale.rs:378 move_and_remove "renameat(dir, name, dir, aside)" */
       d_step {
           if
           :: lk != NONE ->
               moved = lk; move_aside(AS);
               if :: !(moved == judged[me] && jvalid[me]) -> win[me] = moved :: else fi
           :: else      /* ENOENT (a lost reply after the move is ENOENT too) */
           fi;
           CACHE(me, NONE)
       };
       /* Read back what is at the private name: identity, mtime, content.
          @ stale.rs:371-389 move_and_remove "let found = match inspect(dir, aside)" */
       d_step { ex = aname[AS]; same = (ex != NONE && ex == judged[me] && jvalid[me]) };
       if
       :: ex == NONE -> goto broke        /* nothing moved: Changed */
       :: else -> ex = NONE
       fi;
#ifndef MUT_BREAK_NOCHECK
       /* @ stale.rs:389-403 move_and_remove "if found.version.id == judged.version.id" */
       if
       :: same ->
#endif
           d_step {           /* unlinkat of the aside name: what is there now */
               same = 0; at = aname[AS];
               if :: at != NONE -> aname[AS] = NONE; nlink[at]--; gc(at) :: else fi;
               win[me] = NONE; at = NONE
           };
           goto broke
#ifndef MUT_BREAK_NOCHECK
       :: else -> same = 0
       fi;
       /* Not the file judged: link it back.
          @ stale.rs:414-420 move_and_remove "if put_back(dir, aside, name, privilege)" */
#ifndef MUT_NO_PUTBACK
       put_back();
#else
       d_step { win[me] = NONE; forget_aside() };
#endif
#endif
broke: skip;
       d_step { moved = NONE; judged[me] = NONE; jvalid[me] = 0 };
       goto retry;

ours: skip;
       /* @ dotlock.rs:321-333 acquire_interleaved "fd: Some(temp.into_fd()),"
          @ tempfile.rs:318-321 into_fd "self.unlink_name();" */
       d_step {
           assert(exists(t));
           if :: !ANON -> nlink[t]--; tname[me] = NONE :: else fi;
           elinked = 0;
           incs[me] = 1; busy[me] = 0;
           lapsed[me] = old[t]      /* born stale if stopped after the refresh */
       };
progress_cs:
       /* ============ critical section ============ */
       do
       :: lapsed[me] && !touched ->
           /* The keep-alive: refresh through our descriptor, then ask
              whether the name is still ours.  Only after a stop: for a
              holder that was not stopped both steps change nothing.
              @ dotlock.rs:493-502 touch "futimens(fd, &TimeSpec::UTIME_NOW, &TimeSpec::UTIME_NOW)" */
           d_step { touched = 1; old[t] = 0; newver(t) };
           /* @ dotlock.rs:472-474 is_held "current_id(&self.dir, &self.name)? == Some(self.id)" */
           d_step {
               CACHE(me, lk);
               if
               :: lk == t -> lapsed[me] = old[t]
               :: else                      /* NotOurs: the keep-alive ends */
               fi
           }
       :: break
       od;
       skip;

       /* ============ release ============
          @ dotlock.rs:537-616 release_steps "fn release_steps(" */
#ifndef MOVE_ASIDE
       /* Release::CheckThenUnlink: close, ask whether the name is still
          ours, remove it by name.
          @ dotlock.rs:554-558 release_steps "drop(fd);" */
       d_step {
           incs[me] = 0; touched = 0; lapsed[me] = 0; busy[me] = 1;
           T[me] = NONE; rel[me] = t; gc(t)
       };
       /* t still holds our inode number (self.id).  Its file may be gone
          by now and the number given to another file (ext4 reuses them):
          the assertion says that cannot happen unless the holder was
          stopped past the stale age (README, "Inode numbers").
          @ dotlock.rs:558-560 release_steps "if !self.is_held()?" */
#if defined(CHECKED_CLAIMS) && !defined(WITH_STOPS)
       d_step { CACHE(me, lk); same = (lk == t); assert(exists(t)) };
#else
       d_step { CACHE(me, lk); same = (lk == t) };
#endif
#ifndef MUT_RELEASE_NOCHECK
       if
       :: same -> same = 0
       :: else -> d_step { t = NONE; rel[me] = NONE }; goto released   /* NotOurs */
       fi;
#endif
       /* @ dotlock.rs:563-565 release_steps "unlinkat(&self.dir, self.name.as_os_str()" */
       d_step {
           same = 0; t = NONE; rel[me] = NONE;
           if
           :: lk != NONE -> at = lk; lk = NONE; nlink[at]--; gc(at); at = NONE
           :: else
           fi;
           CACHE(me, NONE)
       };
#else
       /* Release::MoveAside: move the name aside, then read what is there
          while our descriptor is open (its number cannot have passed to
          another file), then close.
          @ dotlock.rs:574-581 release_steps "renameat(" */
       d_step {
           incs[me] = 0; touched = 0; lapsed[me] = 0; busy[me] = 1;
           if
           :: lk != NONE ->
               moved = lk; move_aside(AS);
               if :: moved != t -> win[me] = moved :: else fi
           :: else
           fi;
           CACHE(me, NONE);
#ifndef SHARED_ASIDE
           /* our private name, which nobody else changes, and the close,
              which nobody sees (our file, if moved, is under that name)
              @ dotlock.rs:588-591 release_steps "let found = current_id(&self.dir, &aside);" */
           ex = aname[AS]; assert(exists(t)); T[me] = NONE; gc(t)
#endif
       };
#ifdef SHARED_ASIDE
       /* @ dotlock.rs:588-591 release_steps "let found = current_id(&self.dir, &aside);" */
       d_step { ex = aname[AS]; assert(exists(t)); T[me] = NONE; gc(t) };
#endif
       /* @ dotlock.rs:585-602 release_steps "Ok(Some(id)) if id == self.id =>" */
       if
#ifdef MUT_RELEASE_NOCHECK
       :: ex != NONE ->
#else
       :: ex != NONE && ex == t ->
#endif
           d_step {           /* unlinkat of the aside name: what is there now */
               at = aname[AS];
               if :: at != NONE -> aname[AS] = NONE; nlink[at]--; gc(at) :: else fi;
               win[me] = NONE; at = NONE; ex = NONE; t = NONE; moved = NONE
           }
       :: ex == NONE -> t = NONE; moved = NONE           /* NotOurs */
       :: else -> ex = NONE; t = NONE; moved = NONE; put_back()   /* NotOurs */
       fi;
#endif
released: skip
    od
  } unless {
    /* SIGKILL (Env): the steps stop.  Env closed the descriptors and left
       the files; the locals are cleared so that dead processes' states
       merge. */
    d_step {
        !alive[me] ->
        t = NONE; elinked = 0; rep = 0; nl = 0; at = NONE;
        ex = NONE; moved = NONE; same = 0; touched = 0
    }
  }
}

/* ------------------------------------------------------------------ */
/* The environment                                                     */
/* ------------------------------------------------------------------ */

/* SIGKILL: the descriptors close, every file stays where it is. */
inline kill(p) {
    alive[p] = 0; incs[p] = 0; lapsed[p] = 0; busy[p] = 0; rel[p] = NONE;
    judged[p] = NONE; jvalid[p] = 0; CACHE(p, UNK); win[p] = NONE;
    g = T[p]; T[p] = NONE; gc(g);
    g = tname[p]; tname[p] = NONE; gc(g);
#ifdef SHARED_ASIDE
    if :: p == 2 -> g = aname[p]; aname[p] = NONE; gc(g) :: else fi;
#else
    g = aname[p]; aname[p] = NONE; gc(g);
#endif
    g = 0
}

/* Stopped for longer than the stale age (SIGSTOP, swapped out, a
   suspended VM, a hung NFS server): what p keeps fresh is old now, if p
   held the lock its lease lapsed, and time passed for everyone: a lock
   nobody keeps fresh is old too.  What others do meanwhile are the
   interleavings around this transition. */
inline stall(p) {
    if
    :: lk == T[p] && T[p] != NONE -> old[T[p]] = 1;
        if :: incs[p] -> lapsed[p] = 1 :: else fi
    :: else
    fi;
    if :: UNKEPT -> old[lk] = 1 :: else fi
}

#ifdef OPEN_WINDOW
#define may_kill(p)  (faults < MAXFAULTS && alive[p])
#else
/* part of the assumption: not killed between its rename and link back */
#define may_kill(p)  (faults < MAXFAULTS && alive[p] && win[p] == NONE)
#endif
/* Only when there is something to age: p's file is the lock (elsewhere
   its age is not seen: p refreshes its temporary file before each link,
   and a breaker compares mtimes, which a stop does not change), or a lock
   nobody keeps fresh. */
#define may_stall(p) \
    (faults < MAXFAULTS && alive[p] && \
     ((T[p] != NONE && lk == T[p] && (incs[p] -> !lapsed[p] : !old[T[p]])) || UNKEPT))

active proctype Env() {
end:
    do
    :: d_step { may_kill(0) -> kill(0); faults++ }
    :: d_step { may_kill(1) -> kill(1); faults++ }
    :: d_step { may_kill(2) -> kill(2); faults++ }
#if defined(WITH_STOPS) && !defined(LIVENESS)
    :: d_step { may_stall(0) -> stall(0); faults++ }
    :: d_step { may_stall(1) -> stall(1); faults++ }
    :: d_step { may_stall(2) -> stall(2); faults++ }
#endif
    od
}

#ifndef LIVENESS
/* A lock nobody keeps fresh goes stale; a fault, since time must pass.
   Operations are short next to the stale age: without a stop no lock
   goes stale while a live process is inside one (README, "Time"). */
#define QUIESCENT ((!alive[0] || !busy[0]) && (!alive[1] || !busy[1]) && \
                   (!alive[2] || !busy[2]))
active proctype Ager() {
end:
    do
    :: d_step { UNKEPT && QUIESCENT && faults < MAXFAULTS -> old[lk] = 1; faults++ }
    od
}

/* Properties 1 and 2 hold in every state. */
active proctype Monitor() {
end:
    atomic { !(MUTEX && INPLACE_ALL) -> assert(MUTEX); assert(INPLACE_ALL) }
}
#endif

/* Property 5, progress: under weak fairness (pan -f), with every holder
   releasing or dying (critical sections are finite here), the lock is
   taken again and again until every process is dead. */
ltl progress {
    [] <> (incs[0] || incs[1] || incs[2] || (!alive[0] && !alive[1] && !alive[2]))
}

init {
    d_step {
        alive[0] = 1; alive[1] = 1; alive[2] = 1;
        CACHE(0, UNK); CACHE(1, UNK); CACHE(2, UNK)
    };
    atomic { run P(0); run P(1); run P(2) }
}
