// slowctl: methods every generated widget shares, inserted by the flow generator into each widget's
// methods in place of its __SLOWCTL_COMMON__ line (Dashboard 2 compiles a widget's own options only: no
// mixins): number formats with units, status ages, the state of a channel.
    fmt (v, unit) {
        if (typeof v !== 'number') return '–'
        const a = Math.abs(v)
        const text = a !== 0 && (a >= 1e5 || a < 1e-2) ? v.toExponential(3) : v.toFixed(a >= 100 ? 1 : 2)
        return unit ? text + ' ' + unit : text
    },
    // currents: in the device's display unit (µA for HV), from A
    fmtCurrent (v, unit, scale) {
        return typeof v === 'number' ? this.fmt(Number((v / scale).toPrecision(6)), unit) : '–'
    },
    ageOf (ts, now) {
        if (typeof ts !== 'number') return '–'
        const age = Math.max(0, (now - ts) / 1000)
        return (age < 10 ? age.toFixed(1) : Math.round(age)) + ' s'
    },
    // a channel's state word: the device's own when it is not ok (disconnected, error)
    channelState (status, channel) {
        if (!status) return '–'
        if (status.state !== 'ok') return status.state
        const c = (status.channels || []).find(x => x.channel === channel)
        return (c && c.state) || (c && 'on' in c ? (c.on ? 'ON' : 'OFF') : 'ok')
    },
    timeOf (ms) {
        return typeof ms === 'number' ? new Date(ms).toLocaleTimeString() : '–'
    },
    // a command from a button: an id the reply will carry, waited for (pending), the last answer cleared;
    // the widget has seq, session, pending and last in its data
    transmit (cmd) {
        this.seq += 1
        cmd.id = 'ui-' + this.session + '-' + this.seq
        this.pending[cmd.id] = Date.now()
        this.last = null
        this.send({ payload: cmd })
    },
    // the confirmation dialogs (HV changes, All HV off), by keyboard: on opening, focus goes into the dialog,
    // to its first button (Cancel: Enter alone never confirms); Tab stays in it, Escape cancels; on closing,
    // focus goes back to what opened it
    dialogOpened (ref) {
        this.dialogOpener = document.activeElement
        this.$nextTick(() => {
            const first = this.$refs[ref] && this.$refs[ref].querySelector('button')
            if (first) first.focus()
        })
    },
    dialogClosed () {
        const back = this.dialogOpener
        this.dialogOpener = null
        if (back && back.isConnected && typeof back.focus === 'function') this.$nextTick(() => back.focus())
    },
    dialogKey (event, cancel) {
        if (event.key === 'Escape') {
            event.preventDefault()
            cancel()
            return
        }
        if (event.key !== 'Tab') return
        const buttons = Array.from(event.currentTarget.querySelectorAll('button:not([disabled])'))
        const i = buttons.indexOf(document.activeElement)
        const next = event.shiftKey ? (i <= 0 ? buttons.length - 1 : i - 1) : (i + 1) % buttons.length
        event.preventDefault()
        buttons[next].focus()
    },
