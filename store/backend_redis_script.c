/*
 * The Lua script of a Redis commit (backend_redis_commit.c sends it after
 * the batch's plain writes, on the same connection): what each op does to its
 * record, its directory entry, its tag sets, the set of ids and the
 * deadline index, and the change log entry that tells the other mounts.
 * Kept in a file of its own: it is a program in its own language.
 */
#include "store/backend_redis.h"

/*
 * ARGV[1] key prefix, [2] now (ms, the client's clock like the store's
 * deadlines), [3] the batch's highest id, [4] this mount's id ('' = do not
 * announce), [5] and [6] the declared tags the batch changes ('' and '' for
 * none; see kv_redis_decl_args), [7] the batch's staging marker ('' for
 * none; see backend_redis_commit.c), [8] C, the number of compact ops.
 * Then C compact ops, from b = 8 + c*5: b+1 id, b+2 parent, b+3 name, b+4
 * tags, b+5 the vver of its value written before the script ('0' none).
 * A compact op is an 'n' (below) with no deadline, no uploaded value and
 * no version to make obsolete: most of a batch of new keys, sent in 5
 * arguments instead of 12 (Redis makes a Lua string of each).
 * Then per op, from b = 8 + C*5 + i*12: b+1 'P', 'N' (a PUT of a
 * record no commit carried before: kv_op.never_sent), 'U' (a PUT of one
 * whose only commits failed: kv_op.uncertain) or 'D'; 'p', 'n' and 'u'
 * are 'P', 'N' and 'U' that may give way to the holder of their name
 * (kv_op.may_yield), 'q' a 'p' of a record this mount holds as committed
 * (kv_op.was_committed); b+2 id, b+3
 * record, b+4 parent, b+5 name, b+6 tags (NUL-joined), b+7 vver, b+8
 * expires_ms, b+9 value source ('' none, 'i' inline, 't' uploaded, 'z' an
 * empty value, which is stored as none), b+10
 * the bytes or the temporary key, b+11 stored size, b+12 the version the op
 * makes obsolete.
 *
 * A deadline already past at commit time gets no PEXPIREAT: the record is
 * kept (with its deadline) for the store, which removes it itself; Redis
 * would otherwise drop it before the store had decided.
 *
 * Several mounts: a PUT whose name another record holds (another mount
 * created it meanwhile) removes that record, as a rename over it would:
 * last writer wins, and the store never has two records on one name. A
 * record of the same batch is never removed that way (a swap of two
 * names). A PUT that may give way does, instead, to a directory with
 * entries, and, when it is a 'q' whose index another mount removed (a
 * record committed again after a removal, such as a directory kept for
 * entries the remover did not know), to any live record. A DEL of a directory that still
 * has entries of records the batch does not carry (another mount created
 * them meanwhile) is not applied, and a PUT of a record another mount
 * deleted, whose value went with it, is not either: every mount is told to
 * fetch those records (and what is below them) again. An op that gives way
 * to the holder of its name (see above) is left out whole, with what was
 * written for it before the script; the script returns the
 * indexes of those ops (0-based), and every mount is told to fetch the
 * holder; compact op c is index c, full op i index C + i. T:c:<id> ("parent/name") is a
 * claim (backend_redis_sync.c) that the record's PUT or DEL settles. Every
 * batch is announced in the change log T:log with the ids it touched.
 */
const char kv_redis_script[] =
	"local P, now, maxid, by = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]\n"
	"local MK, C = ARGV[7], tonumber(ARGV[8])\n"
	"local CK, K = 5, 12\n"
	"local H = 8 + C * CK\n"
	"local n = (#ARGV - H) / K\n"
	/* The op types, which may give way (YM) and which this mount held as
	 * committed (CM). */
	"local TY, YM, CM = {}, {}, {}\n"
	"do\n"
	"  local LT = {p = 'P', n = 'N', u = 'U', q = 'P'}\n"
	"  for i = 0, n - 1 do\n"
	"    local t = ARGV[H + i * K + 1]\n"
	"    if LT[t] then TY[i], YM[i], CM[i] = LT[t], true, t == 'q' else TY[i] = t end\n"
	"  end\n"
	"end\n"
	/* What was written for op j before the script. */
	"local function unwrite(j)\n"
	"  local c = H + j * K\n"
	"  local x = ARGV[c+2]\n"
	"  if TY[j] == 'N' then redis.call('DEL', P..'r:'..x, P..'i:'..x) end\n"
	"  if ARGV[c+9] == 'i' then redis.call('DEL', P..'v:'..x..':'..ARGV[c+7]) end\n"
	"  if ARGV[c+9] == 't' then redis.call('DEL', ARGV[c+10]) end\n"
	"end\n"
	/* What was written before the script for compact op c. */
	"local function cunwrite(c)\n"
	"  local b = 8 + c * CK\n"
	"  local x, v = ARGV[b+1], ARGV[b+5]\n"
	"  redis.call('DEL', P..'r:'..x, P..'i:'..x)\n"
	"  if v ~= '0' then redis.call('DEL', P..'v:'..x..':'..v) end\n"
	"end\n"
	/* The batch's staging marker goes as soon as the batch is decided:
	 * from then on the writes it lists are this script's to keep or
	 * undo, never the sweeper's (kv_redis_unstage). */
	"local function unstaged()\n"
	"  if MK ~= '' then\n"
	"    redis.call('DEL', P..'up:'..MK)\n"
	"    redis.call('ZREM', P..'up', MK)\n"
	"  end\n"
	"end\n"
	/* Refusing the batch: what was written before the script goes
	 * too. */
	"local function refuse(why)\n"
	"  for j = 0, n - 1 do unwrite(j) end\n"
	"  for c = 0, C - 1 do cunwrite(c) end\n"
	"  unstaged()\n"
	"  return redis.error_reply(why)\n"
	"end\n"
	/* The marker is gone only if a sweep took it, with the writes it
	 * listed (its age is read on the mounts' clocks): nothing of the
	 * batch may be published then. */
	"if MK ~= '' and redis.call('EXISTS', P..'up:'..MK) == 0 then\n"
	"  return refuse('ERR nadb: the staged writes of the batch were swept before its script ran')\n"
	"end\n"
	/* A newer nadbfs converted the store meanwhile: write nothing
	 * (backend_redis_format.c). */
	"local fmt = redis.call('GET', P..'fmt')\n"
	"if fmt and fmt ~= '2' then\n"
	"  return refuse('ERR nadb: the store has layout version '..fmt..', which this nadbfs does not know')\n"
	"end\n"
	"for i = 0, n - 1 do\n"
	"  local b = H + i * K\n"
	"  if ARGV[b+9] == 't' and redis.call('STRLEN', ARGV[b+10]) ~= tonumber(ARGV[b+11]) then\n"
	"    return refuse('ERR nadb: an uploaded value is missing or incomplete')\n"
	"  end\n"
	"end\n"
	/* Records and names another mount's transaction reserved
	 * (backend_redis_tx.c) wait for its commit; T:txl exists only while a
	 * transaction commits, so a batch usually pays one EXISTS. */
	"if redis.call('EXISTS', P..'txl') == 1 then\n"
	KV_REDIS_LUA_TXL
	"  local tnow = server_ms()\n"
	"  local fs = {}\n"
	"  for i = 0, n - 1 do\n"
	"    local b = H + i * K\n"
	"    fs[#fs+1] = 'r'..ARGV[b+2]\n"
	"    if TY[i] ~= 'D' then fs[#fs+1] = 'n'..ARGV[b+4]..'/'..ARGV[b+5] end\n"
	"  end\n"
	"  for c = 0, C - 1 do\n"
	"    local b = 8 + c * CK\n"
	"    fs[#fs+1] = 'r'..ARGV[b+1]\n"
	"    fs[#fs+1] = 'n'..ARGV[b+2]..'/'..ARGV[b+3]\n"
	"  end\n"
	"  for s = 1, #fs, 2000 do\n"
	"    local got = redis.call('HMGET', P..'txl', unpack(fs, s, math.min(s + 1999, #fs)))\n"
	"    for j = 1, #got do\n"
	"      local who = live(got[j], tnow)\n"
	"      if who and who ~= by then\n"
	"        return refuse('NADBLOCKED reserved by a transaction of another mount')\n"
	"      end\n"
	"    end\n"
	"  end\n"
	"end\n"
	"unstaged()\n"
	KV_REDIS_LUA_DROP
	/* Calls with many arguments, unpacked in chunks (Lua's C stack is
	 * limited to a few thousand values). */
	"local function many(cmd, key, list)\n"
	"  for s = 1, #list, 2000 do\n"
	"    local e = math.min(s + 1999, #list)\n"
	"    if key then redis.call(cmd, key, unpack(list, s, e))\n"
	"    else redis.call(cmd, unpack(list, s, e)) end\n"
	"  end\n"
	"end\n"
	"local inbatch, idset, refetch, yielded = {}, {}, {}, {}\n"
	/* A record or claim that exists, its deadline (T:exp) not past: a
	 * record past it may still exist (open handles read its value until
	 * their mount deletes it, and a deadline already past at commit, or
	 * another mount's clock, leaves it without Redis's own expiry), but
	 * every mount removes it on sight. */
	"local function alive(x)\n"
	"  if redis.call('EXISTS', P..'r:'..x, P..'c:'..x) == 0 then return false end\n"
	"  local dl = redis.call('ZSCORE', P..'exp', x)\n"
	"  return not dl or tonumber(dl) > now\n"
	"end\n"
	"for i = 0, n - 1 do inbatch[ARGV[H + i * K + 2]] = true end\n"
	"for c = 0, C - 1 do inbatch[ARGV[8 + c * CK + 1]] = true end\n"
	/* Declared tags (backend_redis_decl.c), before the root's op
	 * rewrites its record: this mount's adds and removes go into
	 * T:decl, seeded on first use from the record's list and from what
	 * this mount started from. If the set then is not this mount's list,
	 * every mount fetches the root again. */
	"if ARGV[5] ~= '' then\n"
	"  local dk = P..'decl'\n"
	"  local want = split(string.sub(ARGV[5], 2))\n"
	"  local base = split(ARGV[6])\n"
	"  if redis.call('EXISTS', dk) == 0 then\n"
	"    local rm = record('1')\n"
	"    local l = rm and #rm >= 101 and record_tags(rm) or {}\n"
	"    for _, t in ipairs(base) do l[#l+1] = t end\n"
	"    l[#l+1] = ''\n"
	"    many('SADD', dk, l)\n"
	"  end\n"
	"  if string.sub(ARGV[5], 1, 1) == 'r' then base = redis.call('SMEMBERS', dk) end\n"
	"  local inw, inb, add, rem = {}, {}, {}, {}\n"
	"  for _, t in ipairs(want) do inw[t] = true end\n"
	"  for _, t in ipairs(base) do inb[t] = true end\n"
	"  for _, t in ipairs(want) do if not inb[t] then add[#add+1] = t end end\n"
	"  for _, t in ipairs(base) do if t ~= '' and not inw[t] then rem[#rem+1] = t end end\n"
	"  many('SADD', dk, add)\n"
	"  many('SREM', dk, rem)\n"
	"  local same = redis.call('SCARD', dk) == #want + 1\n"
	"  for s = 1, #want, 2000 do\n"
	"    if not same then break end\n"
	"    local got = redis.call('SMISMEMBER', dk, unpack(want, s, math.min(s + 1999, #want)))\n"
	"    for j = 1, #got do if got[j] == 0 then same = false end end\n"
	"  end\n"
	"  if not same then refetch[#refetch+1] = '1' end\n"
	"end\n"
	/* Directories whose DEL is not applied: those that still have entries
	 * of live records or claims outside the batch (another mount made them
	 * after this one last looked), as an rmdir of a non-empty directory
	 * fails; and, up the tree, those with such a directory in them, found
	 * before any op runs, so the batch's order does not matter. Each one
	 * and everything below it that stays is announced for every mount to
	 * fetch. */
	"local stays = {}\n"
	"do\n"
	"  local ents, live, dels = {}, {}, {}\n"
	"  for i = 0, n - 1 do\n"
	"    local b = H + i * K\n"
	"    if TY[i] == 'D' then\n"
	"      dels[ARGV[b+2]] = true\n"
	"      local vs = redis.call('HVALS', P..'d:'..ARGV[b+2])\n"
	"      if #vs > 0 then ents[ARGV[b+2]] = vs end\n"
	"    end\n"
	"  end\n"
	"  for _, vs in pairs(ents) do\n"
	"    for _, x in ipairs(vs) do\n"
	"      if live[x] == nil then\n"
	"        live[x] = not inbatch[x] and alive(x)\n"
	"      end\n"
	"    end\n"
	"  end\n"
	"  local changed = true\n"
	"  while changed do\n"
	"    changed = false\n"
	"    for id, vs in pairs(ents) do\n"
	"      if not stays[id] then\n"
	"        for _, x in ipairs(vs) do\n"
	"          if live[x] or stays[x] then stays[id] = true; changed = true; break end\n"
	"        end\n"
	"      end\n"
	"    end\n"
	"  end\n"
	"  local seen = {}\n"
	"  for id in pairs(stays) do\n"
	"    local q, k = {id}, 1\n"
	"    while k <= #q do\n"
	"      local x = q[k]\n"
	"      k = k + 1\n"
	"      if not seen[x] then\n"
	"        seen[x] = true\n"
	"        refetch[#refetch+1] = x\n"
	"        for _, y in ipairs(redis.call('HVALS', P..'d:'..x)) do\n"
	"          if stays[y] or not dels[y] then q[#q+1] = y end\n"
	"        end\n"
	"      end\n"
	"    end\n"
	"  end\n"
	"end\n"
	/* The claims of the batch's records, read in a few MGETs: only
	 * unclaim() changes them, each for its own id. A record never sent
	 * ('N', and the compact ops) has none: a create that may have
	 * claimed its name is flagged sent (kv_sync_claim). */
	"local claims, cl = {}, {}\n"
	"for i = 0, n - 1 do\n"
	"  local b = H + i * K\n"
	"  if TY[i] ~= 'D' and TY[i] ~= 'N' then cl[#cl+1] = ARGV[b+2] end\n"
	"end\n"
	"for s = 1, #cl, 2000 do\n"
	"  local ks = {}\n"
	"  for j = s, math.min(s + 1999, #cl) do ks[#ks+1] = P..'c:'..cl[j] end\n"
	"  local got = redis.call('MGET', unpack(ks))\n"
	"  for j = 1, #ks do claims[cl[s + j - 1]] = got[j] end\n"
	"end\n"
	/* Puts the record on its directory entry; a rival holding the name
	 * is dropped (see above). */
	"local function place(id, dk, name)\n"
	"  local cur = redis.call('HGET', dk, name)\n"
	"  if cur == id then return end\n"
	"  if cur and not inbatch[cur] and redis.call('EXISTS', P..'d:'..cur) == 0 then drop(cur) end\n"
	"  redis.call('HSET', dk, name, id)\n"
	"end\n"
	/* Records never sent before ('N') cannot have an index, so they
	 * skip its read, and those whose name was free when the script
	 * started get their entries and tags in one HSET/SADD per
	 * directory/tag (pend, written by flush()) instead of an HSETNX
	 * each. Every other op first writes what is pending, so it sees
	 * the entries as a one-by-one commit would; the only entry it can
	 * create is its own name, which is then no longer free. */
	"local free, pend, ptag, cpar = {}, {}, {}, {}\n"
	/* The directory key of each compact op's parent, made once per
	 * parent: a concatenation makes (and hashes) a new string. */
	"local cdk = {}\n"
	"do\n"
	"  local want, nw = {}, {}\n"
	"  for c = 0, C - 1 do\n"
	"    local b = 8 + c * CK\n"
	"    local par = ARGV[b+2]\n"
	"    local dk = cpar[par]\n"
	"    if not dk then\n"
	"      dk = P..'d:'..par\n"
	"      cpar[par] = dk\n"
	"      want[dk], nw[dk] = {}, 0\n"
	"    end\n"
	"    cdk[c] = dk\n"
	"    local k = nw[dk] + 1\n"
	"    want[dk][k], nw[dk] = ARGV[b+3], k\n"
	"  end\n"
	"  for i = 0, n - 1 do\n"
	"    local b = H + i * K\n"
	"    if TY[i] == 'N' and ARGV[b+4] ~= '0' then\n"
	"      local dk = P..'d:'..ARGV[b+4]\n"
	"      if not want[dk] then want[dk] = {} end\n"
	"      local w = want[dk]\n"
	"      w[#w+1] = ARGV[b+5]\n"
	"    end\n"
	"  end\n"
	"  for dk, names in pairs(want) do\n"
	"    local f = {}\n"
	/* A directory without entries has no hash (Redis drops an empty
	 * one): all its names are free, as for one made in this batch. */
	"    if redis.call('EXISTS', dk) == 0 then\n"
	"      for _, nm in ipairs(names) do f[nm] = true end\n"
	"      names = {}\n"
	"    end\n"
	"    for s = 1, #names, 2000 do\n"
	"      local e = math.min(s + 1999, #names)\n"
	"      local got = redis.call('HMGET', dk, unpack(names, s, e))\n"
	"      for j = s, e do if not got[j - s + 1] then f[names[j]] = true end end\n"
	"    end\n"
	"    free[dk] = f\n"
	"  end\n"
	"end\n"
	"local kids, full = nil, {}\n"
	"local has_entries\n"
	/* Does PUT op j get applied (see the skip below): it brings a value
	 * of its own, or its record is still indexed, or it is a directory
	 * that has entries. */
	"local function applied(j)\n"
	"  local c = H + j * K\n"
	"  if TY[j] == 'N' or ARGV[c+9] ~= '' then return true end\n"
	"  if indexed(ARGV[c+2]) then return true end\n"
	"  if ARGV[c+7] ~= '0' then return false end\n"
	"  return not CM[j] or has_entries(ARGV[c+2])\n"
	"end\n"
	/* Does directory id have an entry that stays: a PUT of the batch
	 * below it that is applied, or a live record outside the batch? */
	"has_entries = function(id)\n"
	"  if full[id] ~= nil then return full[id] end\n"
	"  if not kids then\n"
	"    kids = {}\n"
	"    for j = 0, n - 1 do\n"
	"      if TY[j] ~= 'D' then\n"
	"        local p = ARGV[H + j * K + 4]\n"
	"        if not kids[p] then kids[p] = {} end\n"
	"        local l = kids[p]\n"
	"        l[#l+1] = j\n"
	"      end\n"
	"    end\n"
	"  end\n"
	"  full[id] = cpar[id] ~= nil\n"
	"  if full[id] then return true end\n"
	"  for _, j in ipairs(kids[id] or {}) do\n"
	"    if applied(j) then full[id] = true; return true end\n"
	"  end\n"
	"  for _, x in ipairs(redis.call('HVALS', P..'d:'..id)) do\n"
	"    if not inbatch[x] and alive(x) then full[id] = true; return true end\n"
	"  end\n"
	"  return false\n"
	"end\n"
	"local function flush()\n"
	"  for dk, l in pairs(pend) do many('HSET', dk, l) end\n"
	"  for tk, l in pairs(ptag) do many('SADD', tk, l) end\n"
	"  pend, ptag = {}, {}\n"
	"end\n"
	"local function pend_add(t, k, a, b)\n"
	"  if not t[k] then t[k] = {} end\n"
	"  local l = t[k]\n"
	"  l[#l+1] = a\n"
	"  if b then l[#l+1] = b end\n"
	"end\n"
	/* The compact ops, first: new records (as 'n') whose name is free
	 * take it in the batched writes; the others as an 'n' in the loop
	 * below would. Their order against the other ops does not matter:
	 * each takes a name no other record of the batch ends on, and a
	 * record of the batch holding it in Redis is never displaced. */
	"local cadd, na = {}, 0\n"
	"for c = 0, C - 1 do\n"
	"  local b = 8 + c * CK\n"
	"  local id, name, tags = ARGV[b+1], ARGV[b+3], ARGV[b+4]\n"
	"  local dk = cdk[c]\n"
	"  local f = free[dk]\n"
	"  if f[name] then\n"
	"    f[name] = nil\n"
	"    local l = pend[dk]\n"
	"    if not l then l = {}; pend[dk] = l end\n"
	"    local k = #l\n"
	"    l[k+1], l[k+2] = name, id\n"
	"    if tags ~= '' then\n"
	"      for _, tg in ipairs(split(tags)) do pend_add(ptag, P..'t:'..tg, id) end\n"
	"    end\n"
	"    touched[#touched+1] = id\n"
	"    na = na + 1\n"
	"    cadd[na] = id\n"
	"  else\n"
	"    flush()\n"
	"    local cur = redis.call('HGET', dk, name)\n"
	"    if cur and cur ~= id and not inbatch[cur] and\n"
	"       redis.call('EXISTS', P..'d:'..cur) == 1 then\n"
	"      cunwrite(c)\n"
	"      yielded[#yielded+1] = c\n"
	"      refetch[#refetch+1] = cur\n"
	"    else\n"
	"      touched[#touched+1] = id\n"
	"      if tags ~= '' then\n"
	"        for _, tg in ipairs(split(tags)) do redis.call('SADD', P..'t:'..tg, id) end\n"
	"      end\n"
	"      if redis.call('HSETNX', dk, name, id) == 0 then place(id, dk, name) end\n"
	"      na = na + 1\n"
	"      cadd[na] = id\n"
	"    end\n"
	"  end\n"
	"end\n"
	"for i = 0, n - 1 do\n"
	"  local b = H + i * K\n"
	"  local typ, id = TY[i], ARGV[b+2]\n"
	"  local rk, ik = P..'r:'..id, typ ~= 'N' and P..'i:'..id\n"
	"  local dk = typ ~= 'D' and ARGV[b+4] ~= '0' and P..'d:'..ARGV[b+4]\n"
	"  local fast = typ == 'N' and dk and free[dk][ARGV[b+5]] and not claims[id]\n"
	"  if not fast then flush() end\n"
	"  if dk and free[dk] then free[dk][ARGV[b+5]] = nil end\n"
	"  local old = typ == 'N' and {} or index(id)\n"
	"  local vver = '0'\n"
	/* A record another mount deleted (its index is gone) that this op
	 * does not give a value of its own names a value that went with it,
	 * or that goes once a backup of the deleting mount no longer pins it
	 * (its DEL then leaves the value for the store to reclaim): the
	 * deletion stands, and this mount is told to fetch the record. So
	 * it does for one that names no value (a directory, an empty file)
	 * and that this mount held as committed ('q'), unless it has entries: a change of
	 * its metadata alone (a directory's times when an entry came and
	 * went) does not undo a removal. */
	"  local skip = typ == 'D' and stays[id]\n"
	"  if typ == 'P' or typ == 'U' then\n"
	"    local kn = old[1] ~= false and old[1] ~= nil\n"
	"    if kn and typ == 'U' then kn = redis.call('SISMEMBER', P..'ids', id) == 1 end\n"
	"    if not kn and ARGV[b+9] == '' and\n"
	"       (ARGV[b+7] ~= '0' or (CM[i] and not has_entries(id))) then\n"
	"      skip = true\n"
	"      refetch[#refetch+1] = id\n"
	"    end\n"
	"  end\n"
	"  local yield = false\n"
	/* Gives way (see above): the name's holder is another live record
	 * outside the batch. Looked at only when the name is not free (fast)
	 * and not where the record's own index puts it (a 'U''s index may be
	 * what a failed commit half wrote: it counts once in T:ids). */
	"  local here = old[1] == ARGV[b+4] and old[2] == ARGV[b+5]\n"
	"  if here and typ == 'U' and YM[i] and not fast then\n"
	"    here = redis.call('SISMEMBER', P..'ids', id) == 1\n"
	"  end\n"
	"  if YM[i] and not skip and not fast and dk and not here then\n"
	"    local cur = redis.call('HGET', dk, ARGV[b+5])\n"
	"    if cur and cur ~= id and not inbatch[cur] then\n"
	"      if CM[i] and not old[1] then yield = alive(cur)\n"
	"      else yield = redis.call('EXISTS', P..'d:'..cur) == 1 end\n"
	"    end\n"
	"    if yield then\n"
	"      unwrite(i)\n"
	"      yielded[#yielded+1] = C + i\n"
	"      refetch[#refetch+1] = cur\n"
	"    end\n"
	"  end\n"
	"  if not yield then touched[#touched+1] = id end\n"
	"  if yield or skip then\n"
	"  elseif typ == 'D' then\n"
	"    unindex(id, old)\n"
	"    unclaim(id)\n"
	"    redis.call('DEL', rk, ik)\n"
	"    idset[id] = false\n"
	"    redis.call('ZREM', P..'exp', id)\n"
	"  else\n"
	"    local parent, name, tags, exp, src = ARGV[b+4], ARGV[b+5], ARGV[b+6], ARGV[b+8], ARGV[b+9]\n"
	"    vver = ARGV[b+7]\n"
	/* No index: the record was never committed (or its commit never
	 * got this far), so it has no entry, tags, TTL or claim settled. */
	"    local known = old[1] ~= false and old[1] ~= nil\n"
	/* 'U': an earlier commit of this record failed after its plain
	 * writes (the index) but maybe before this script: only membership
	 * of T:ids, which the script alone writes, says it got this far. */
	"    if known and typ == 'U' and redis.call('SISMEMBER', P..'ids', id) == 0 then known = false end\n"
	"    local samedir = known and old[1] == parent and old[2] == name\n"
	"    if known and not samedir then\n"
	"      local odk = P..'d:'..old[1]\n"
	"      if redis.call('HGET', odk, old[2]) == id then redis.call('HDEL', odk, old[2]) end\n"
	"    end\n"
	"    if not known or old[3] ~= tags then\n"
	"      if known then for _, tg in ipairs(split(old[3] or '')) do redis.call('SREM', P..'t:'..tg, id) end end\n"
	"      for _, tg in ipairs(tags == '' and {} or split(tags)) do\n"
	"        if fast then pend_add(ptag, P..'t:'..tg, id)\n"
	"        else redis.call('SADD', P..'t:'..tg, id) end\n"
	"      end\n"
	"    end\n"
	"    if fast then\n"
	"      pend_add(pend, dk, name, id)\n"
	"    elseif parent ~= '0' then\n"
	/* A claim is only ever made for an id before its first commit,
	 * which settles it. */
	"      if not known then\n"
	"        local cl = claims[id]\n"
	"        if typ == 'N' then cl = false end\n"
	"        unclaim(id, cl)\n"
	"      end\n"
	"      if samedir or redis.call('HSETNX', dk, name, id) == 0 then place(id, dk, name) end\n"
	"    end\n"
	/* The record, which holds its index; the index's copy in T:i only
	 * while the record has a deadline. SET leaves the record without an
	 * expiry, which the deadline's PEXPIREAT below sets again. */
	"    if typ ~= 'N' then\n"
	"      redis.call('SET', rk, ARGV[b+3])\n"
	"      if exp ~= '0' then\n"
	"        redis.call('HSET', ik, 'p', parent, 'n', name, 't', tags, 'v', vver)\n"
	"      elseif not known then\n"
	"        redis.call('DEL', ik)\n"
	"      end\n"
	"    end\n"
	"    local vk = (src == 't' or exp ~= '0' or known) and P..'v:'..id..':'..vver\n"
	"    if src == 't' then redis.call('RENAME', ARGV[b+10], vk) end\n"
	"    idset[id] = true\n"
	/* TTLs: only keys in T:exp carry one (every script keeps them
	 * together), a value just SET carries none and a renamed upload
	 * carries the temporary key's. */
	"    if exp ~= '0' then\n"
	"      redis.call('ZADD', P..'exp', exp, id)\n"
	"      if tonumber(exp) > now then\n"
	"        redis.call('PEXPIREAT', rk, exp)\n"
	"        if vver ~= '0' then redis.call('PEXPIREAT', vk, exp) end\n"
	"      else\n"
	"        redis.call('PERSIST', rk)\n"
	"        if vver ~= '0' then redis.call('PERSIST', vk) end\n"
	"      end\n"
	"    else\n"
	"      local had = known and redis.call('ZREM', P..'exp', id) == 1\n"
	"      if had then\n"
	"        redis.call('PERSIST', rk)\n"
	"        redis.call('DEL', ik or P..'i:'..id)\n"
	"      end\n"
	"      if vver ~= '0' and (src == 't' or (had and src ~= 'i')) then redis.call('PERSIST', vk) end\n"
	"    end\n"
	"  end\n"
	"  local ov = ARGV[b+12]\n"
	/* old_vver 0: a backup still reads the superseded version; the store
	 * reclaims it later (kv_backend_ops.reclaim). */
	"  if ov ~= '0' and not yield then\n"
	"    if old[4] and old[4] ~= '0' and old[4] ~= vver then\n"
	"      redis.call('DEL', P..'v:'..id..':'..old[4])\n"
	"    end\n"
	"    if ov ~= vver and ov ~= old[4] then\n"
	"      redis.call('DEL', P..'v:'..id..':'..ov)\n"
	"    end\n"
	"  end\n"
	"end\n"
	/* Membership of T:ids is per id, so the last op on each id decides
	 * it, in a few calls for the whole batch: the compact ops' ids
	 * (cadd) first, as they ran first. */
	"flush()\n"
	"local add, rem = {}, {}\n"
	"for id, live in pairs(idset) do\n"
	"  if live then add[#add+1] = id else rem[#rem+1] = id end\n"
	"end\n"
	"many('SADD', P..'ids', cadd)\n"
	"many('SADD', P..'ids', add)\n"
	"many('SREM', P..'ids', rem)\n"
	"local cur = tonumber(redis.call('GET', P..'maxid') or '0')\n"
	"if tonumber(maxid) > cur then redis.call('SET', P..'maxid', maxid) end\n"
	"announce(by)\n"
	/* Every mount, this one included ('*' is no mount's id), fetches the
	 * records of the ops skipped above, and what is below them, again. */
	"if #refetch > 0 then\n"
	"  local seq = redis.call('INCR', P..'logseq')\n"
	"  redis.call('XADD', P..'log', 'MAXLEN', '~', '10000', '*', 'seq', seq, 'by', '*',\n"
	"             'ids', table.concat(refetch, ' '))\n"
	"end\n"
	"return yielded\n";
