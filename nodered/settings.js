// slowctl control UI: Node-RED settings. The same file runs natively (`slowctl up`,
// node-red --settings nodered/settings.js) and in the nodered image.
//
// No secret lives in this file or in the flows: logins, the credential key and
// the broker password come from the environment (docs/control-ui.md), and a
// missing one stops Node-RED at start with a message that names it.
'use strict'

const crypto = require('crypto')
const bcrypt = require('bcryptjs')

function required (name) {
    const value = process.env[name]
    if (!value) {
        throw new Error(`slowctl: environment variable ${name} is not set (see docs/control-ui.md)`)
    }
    return value
}

const admin = { user: required('NODERED_ADMIN_USER'), password: required('NODERED_ADMIN_PASSWORD') }
const dashboard = { user: required('NODERED_DASHBOARD_USER'), password: required('NODERED_DASHBOARD_PASSWORD') }
required('MQTT_PASSWORD_NODERED') // read by the broker node of the generated flows

function digest (text) {
    return crypto.createHash('sha256').update(String(text)).digest()
}
const dashboardDigest = { user: digest(dashboard.user), password: digest(dashboard.password) }

// Basic credentials of a request, or null. Compared as SHA-256 digests so that
// the comparison takes the same time whatever the input.
function dashboardLogin (req) {
    const header = req.headers && req.headers.authorization
    if (!header || !/^Basic /i.test(header)) return null
    const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8')
    const colon = decoded.indexOf(':')
    if (colon < 0) return null
    const userOk = crypto.timingSafeEqual(digest(decoded.slice(0, colon)), dashboardDigest.user)
    const passOk = crypto.timingSafeEqual(digest(decoded.slice(colon + 1)), dashboardDigest.password)
    return userOk && passOk
}

// The dashboard and every other httpNode route (httpNodeRoot '/'): HTTP Basic.
function dashboardAuth (req, res, next) {
    if (dashboardLogin(req)) return next()
    res.set('WWW-Authenticate', 'Basic realm="slowctl dashboard", charset="UTF-8"')
    res.status(401).send('slowctl dashboard: login required')
}

// Dashboard 2's socket.io server is attached to the HTTP server, not to the
// httpNode express app, so httpNodeAuth never sees it: this middleware runs on
// every socket.io connection instead. The browser sends the cached Basic
// credentials with the polling requests and the websocket upgrade of its own
// origin. A cross-site page could make the browser send them too, so the
// Origin (when present) must be this host: the same check Dashboard 2 makes
// when no ioMiddleware is set.
function dashboardSocketAuth (socket, next) {
    const req = socket.request
    if (!dashboardLogin(req)) {
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
    next()
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
    dashboard: {
        ioMiddleware: dashboardSocketAuth
    },

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
