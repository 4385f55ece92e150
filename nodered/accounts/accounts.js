// slowctl control UI: the people who may log in to the dashboard, from users.json
// (written by `slowctl user`, docs/records.md and docs/control-ui.md):
//   {"users": {"alice": {"role": "operator", "hash": "$7$101$<salt>$<digest>", ...}, ...}}
// The hash is Mosquitto 2's: PBKDF2-HMAC-SHA512 of the UTF-8 password, iterations between the
// dollars, base64 salt and 64-byte digest (slowctl.stack.broker.hash_password).
//
// Used by settings.js (HTTP Basic on every httpNode route, and the socket.io middleware) and by
// plugin.js (the person in msg._client.user). The file is re-read when it changes (slowctl user
// replaces it atomically), so a person added, removed or given a new password counts at once,
// without a restart of Node-RED.
'use strict'

const crypto = require('crypto')
const fs = require('fs')

const ROLES = ['viewer', 'operator'] // viewer: sees; operator: sees and commands
const LOGIN = /^[a-z][a-z0-9_.-]{1,31}$/ // slowctl.device.contract.LOGIN
const HASH = /^\$7\$([0-9]{1,7})\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})$/
const DIGEST_BYTES = 64
const CHECK_INTERVAL_MS = 2000

function parseHash (text) {
    const m = typeof text === 'string' ? HASH.exec(text) : null
    if (!m) return null
    const iterations = Number(m[1])
    const salt = Buffer.from(m[2], 'base64')
    const digest = Buffer.from(m[3], 'base64')
    if (iterations < 1 || salt.length === 0 || digest.length !== DIGEST_BYTES) return null
    return { iterations, salt, digest }
}

// An unknown login is checked against this, with the same work as a real one: the answer and its
// time are the same for an unknown login and a wrong password.
const DECOY = { iterations: 101, salt: crypto.randomBytes(12), digest: crypto.randomBytes(DIGEST_BYTES) }

function matches (hash, password) {
    const digest = crypto.pbkdf2Sync(Buffer.from(password, 'utf8'), hash.salt, hash.iterations, DIGEST_BYTES, 'sha512')
    return crypto.timingSafeEqual(digest, hash.digest)
}

// {login, password} of a request's Basic credentials, or null
function basicCredentials (req) {
    const header = req && req.headers && req.headers.authorization
    if (typeof header !== 'string' || !/^Basic /i.test(header)) return null
    const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8')
    const colon = decoded.indexOf(':')
    if (colon < 0) return null
    return { login: decoded.slice(0, colon), password: decoded.slice(colon + 1) }
}

const consoleLog = {
    info: (text) => console.log('[slowctl-accounts] ' + text),
    warn: (text) => console.warn('[slowctl-accounts] ' + text),
    error: (text) => console.error('[slowctl-accounts] ' + text)
}

class Accounts {
    constructor (file, log) {
        this.file = file
        this.log = log || consoleLog
        this.version = null // the file as last read: inode, size, times (or why it is absent)
        this.people = new Map() // login -> {login, role, hash}
        this.listeners = []
        this.timer = null
    }

    // Re-reads users.json when it changed. A replaced file has a new inode and new times, an
    // edited one new times: either way the version differs.
    refresh () {
        let version
        let present = true
        try {
            const st = fs.statSync(this.file, { bigint: true })
            version = [st.ino, st.size, st.mtimeNs, st.ctimeNs].join(':')
        } catch (err) {
            version = 'absent:' + err.code
            present = false
        }
        if (version === this.version) return
        const first = this.version === null
        this.version = version
        this.people = present ? this.read() : new Map()
        if (!present) {
            this.log.warn(`${this.file}: ${version.slice(7)}: nobody can log in to the dashboard ` +
                '(add a person: slowctl user add NAME --role operator)')
        }
        if (!first) this.listeners.forEach((fn) => fn())
    }

    read () {
        let body
        try {
            body = JSON.parse(fs.readFileSync(this.file, 'utf8'))
        } catch (err) {
            this.log.error(`${this.file}: cannot be read (${err.message}): nobody can log in to the dashboard until it is fixed`)
            return new Map()
        }
        const users = body && body.users
        if (!users || typeof users !== 'object' || Array.isArray(users)) {
            this.log.error(`${this.file}: no "users" mapping: nobody can log in to the dashboard until it is fixed`)
            return new Map()
        }
        const people = new Map()
        for (const [login, entry] of Object.entries(users)) {
            const hash = entry && typeof entry === 'object' ? parseHash(entry.hash) : null
            if (!LOGIN.test(login) || !hash || !ROLES.includes(entry.role)) {
                this.log.warn(`${this.file}: user ${JSON.stringify(login.slice(0, 40))} left out: expected a login ` +
                    `name with a role (${ROLES.join(', ')}) and a '$7$' hash`)
                continue
            }
            people.set(login, { login, role: entry.role, hash })
        }
        this.log.info(`dashboard logins: ${people.size} ${people.size === 1 ? 'person' : 'people'} in ${this.file}`)
        return people
    }

    // {login, role} when the password is this person's, else null (unknown login or wrong password alike)
    verify (login, password) {
        this.refresh()
        const person = typeof login === 'string' ? this.people.get(login) : undefined
        const ok = matches(person ? person.hash : DECOY, String(password))
        return ok && person ? { login: person.login, role: person.role } : null
    }

    // the person logged in by a request's Basic credentials (HTTP, or a socket's handshake), or null
    authenticate (req) {
        const creds = basicCredentials(req)
        return creds ? this.verify(creds.login, creds.password) : null
    }

    // fn() after every change of users.json (checked every CHECK_INTERVAL_MS, and at each login)
    onChange (fn) {
        this.listeners.push(fn)
        if (!this.timer) {
            this.timer = setInterval(() => this.refresh(), CHECK_INTERVAL_MS)
            this.timer.unref()
        }
    }
}

const instances = new Map()

// one instance per file, shared by settings.js and plugin.js (the same module in one process)
function open (file, log) {
    if (!instances.has(file)) instances.set(file, new Accounts(file, log))
    return instances.get(file)
}

function fromEnv () {
    const file = process.env.SLOWCTL_ACCOUNTS_FILE
    if (!file) throw new Error('environment variable SLOWCTL_ACCOUNTS_FILE is not set (see docs/control-ui.md)')
    return open(file)
}

module.exports = { Accounts, open, fromEnv, basicCredentials, parseHash, ROLES, LOGIN }
