// slowctl control UI: Node-RED settings. The same file runs natively (`slowctl up`,
// node-red --settings nodered/settings.js) and in the nodered image.
//
// No secret lives in this file or in the flows: the editor login, the credential
// key and the broker password come from the environment (docs/control-ui.md),
// and a missing one stops Node-RED at start with a message that names it. The
// dashboard's logins are people's, from users.json (SLOWCTL_ACCOUNTS_FILE).
'use strict'

const path = require('path')
const bcrypt = require('bcryptjs')
const accounts = require('./accounts/accounts.js')

function required (name) {
    const value = process.env[name]
    if (!value) {
        throw new Error(`slowctl: environment variable ${name} is not set (see docs/control-ui.md)`)
    }
    return value
}

const admin = { user: required('NODERED_ADMIN_USER'), password: required('NODERED_ADMIN_PASSWORD') }
required('MQTT_PASSWORD_NODERED') // read by the broker node of the generated flows

// The dashboard's people: one login each, from users.json (`slowctl user`), re-read when it changes.
// A viewer logs in and sees everything; the flows refuse a viewer's commands (msg._client.user.role,
// set by accounts/plugin.js).
const people = accounts.open(required('SLOWCTL_ACCOUNTS_FILE'))

function challenge (res) {
    res.set('WWW-Authenticate', 'Basic realm="slowctl dashboard", charset="UTF-8"')
    res.status(401).send('slowctl dashboard: login required')
}

// The dashboard and every other httpNode route (httpNodeRoot '/'): HTTP Basic, a person's login.
// An unknown login and a wrong password get the same answer, after the same work.
function dashboardAuth (req, res, next) {
    if (people.authenticate(req)) return next()
    challenge(res)
}

// Dashboard 2's socket.io server is attached to the HTTP server, not to the httpNode express app,
// so httpNodeAuth never sees it: this middleware runs on every socket.io connection instead. The
// browser sends the cached Basic credentials with the polling requests and the websocket upgrade
// of its own origin. A cross-site page could make the browser send them too, so the Origin (when
// present) must be this host: the same check Dashboard 2 makes when no ioMiddleware is set.
const sockets = new Set() // open dashboard connections, checked again whenever users.json changes
function dashboardSocketAuth (socket, next) {
    const req = socket.request
    if (!people.authenticate(req)) {
        return next(new Error('slowctl dashboard: login required'))
    }
    const origin = req.headers.origin
    if (origin) {
        let originHost = null
        try { originHost = new URL(origin).host } catch (e) { /* refused below */ }
        if (originHost !== req.headers.host) {
            return next(new Error('slowctl dashboard: cross-origin connection refused'))
        }
    }
    sockets.add(socket)
    socket.once('disconnect', () => sockets.delete(socket))
    next()
}

// A person removed (or with a new password) is logged out at once: their open pages lose their
// connection, and its reconnection is refused.
people.onChange(() => {
    for (const socket of sockets) {
        const creds = accounts.basicCredentials(socket.request)
        if (!people.authenticate(socket.request)) {
            sockets.delete(socket)
            people.log.warn(`dashboard: closed a connection of ${JSON.stringify(creds ? creds.login : '?')}: no longer a valid login`)
            socket.disconnect(true)
        }
    }
})

// The trend page's archive view (compose): InfluxDB's read-only token, a file influx-init writes (the one
// Grafana reads; never the admin token). Read when asked, not at start: Node-RED does not wait for the
// archive (the control UI runs without it), and a token influx-init replaced is picked up. '' = none.
function archiveToken () {
    const file = process.env.INFLUXDB_READONLY_FILE
    if (!file) return ''
    try {
        return require('fs').readFileSync(file, 'utf8').trim()
    } catch (err) {
        return ''
    }
}

module.exports = {
    uiHost: process.env.NODERED_HOST || '127.0.0.1',
    uiPort: Number(process.env.NODERED_PORT || 1880),

    flowFile: 'flows.json',
    flowFilePretty: true,
    // encrypts flows_cred.json; the generator (slowctl nodered-flows) uses the same key
    credentialSecret: required('NODERED_CREDENTIAL_SECRET'),

    // paths behind the gateway: /nodered (editor, admin API, comms websocket), /dashboard
    httpAdminRoot: '/nodered',
    httpNodeRoot: '/',

    // the editor and admin API: one user with every permission
    adminAuth: {
        type: 'credentials',
        sessionExpiryTime: 12 * 3600,
        users: [{
            username: admin.user,
            password: bcrypt.hashSync(admin.password, 10),
            permissions: '*'
        }]
    },
    httpNodeAuth: dashboardAuth,
    // 'file': context kept in the user directory (written every 30 s and at a clean stop), for what a
    // page must show after Node-RED restarts: the log page's events. Everything else stays in memory.
    functionGlobalContext: { archiveToken }, // global.get('archiveToken')() in the trend page's flow

    contextStorage: {
        default: { module: 'memory' },
        file: { module: 'localfilesystem' }
    },
    dashboard: {
        ioMiddleware: dashboardSocketAuth
    },
    // accounts/: a local Node-RED module holding the Dashboard 2 plugin that puts the logged-in
    // person into msg._client.user (hook onAddConnectionCredentials)
    nodesDir: [path.join(__dirname, 'accounts')],

    // a control system does not install code at run time: nodes come from nodered/package.json
    externalModules: {
        autoInstall: false,
        palette: { allowInstall: false, allowUpload: false },
        modules: { allowInstall: false }
    },
    functionExternalModules: false,
    editorTheme: {
        projects: { enabled: false },
        tours: false,
        palette: { catalogues: [] }
    },
    diagnostics: { enabled: false, ui: false },
    telemetry: { enabled: false },
    runtimeState: { enabled: false, ui: false },
    exportGlobalContextKeys: false,

    mqttReconnectTime: 2000,
    logging: {
        console: { level: process.env.NODERED_LOG_LEVEL || 'info', metrics: false, audit: false }
    }
}
