"""Every string the console pages show, Chinese first (zh-CN), English second.

The language comes from ``?lang=en`` / ``?lang=zh`` (remembered in a cookie), else the cookie,
else Chinese. Templates get ``t`` (this table for the language); the page script gets the same
table as JSON.
"""

from __future__ import annotations

from fastapi import Request

LANG_COOKIE = "hyt_lang"
LANGUAGES = ("zh", "en")
DEFAULT_LANG = "zh"

# key: (zh-CN, English)
STRINGS: dict[str, tuple[str, str]] = {
    "app_name": ("呼援通 接警台", "HuYuanTong console"),
    "login_title": ("接警员登录", "Operator login"),
    "username": ("用户名", "Username"),
    "password": ("密码", "Password"),
    "login": ("登录", "Log in"),
    "logout": ("退出", "Log out"),
    "login_failed": ("用户名或密码错误", "Wrong username or password"),
    "switch_lang": ("English", "中文"),
    "queue": ("待处理告警", "Alarm queue"),
    "queue_empty": ("暂无待处理告警", "No alarms waiting"),
    # The end of a long queue: every life-safety alarm is listed, the others up to a limit.
    "queue_more": (
        "另有 {n} 条未显示（按紧急程度和等待时间排序）",
        "{n} more not shown (sorted by urgency and waiting time)",
    ),
    "live": ("实时", "live"),
    "offline": ("连接中断，重连中…", "disconnected, reconnecting…"),
    "col_priority": ("级别", "Priority"),
    "col_kind": ("类型", "Kind"),
    "col_elder": ("老人", "Elder"),
    "col_wait": ("等待", "Waiting"),
    "col_status": ("状态", "Status"),
    "col_action": ("操作", "Action"),
    "claim": ("接听", "Claim"),
    "claimed_by": ("接听人", "taken by"),
    "open": ("打开", "Open"),
    "claim_conflict": ("已被其他接警员接听", "Taken by another operator"),
    "kind_life_safety": ("紧急求助", "Emergency"),
    "kind_unidentified": ("未识别来电", "Unidentified caller"),
    "kind_service": ("生活服务", "Service"),
    "kind_consult": ("咨询", "Consult"),
    "kind_technical": ("设备故障", "Technical"),
    "kind_test": ("测试", "Test"),
    "kind_cancel": ("取消", "Cancel"),
    "kind_visit_finding": ("探访发现", "Visit finding"),
    "mobility_independent": ("可自理", "independent"),
    "mobility_walking_aid": ("需助行器", "walking aid"),
    "mobility_wheelchair": ("轮椅", "wheelchair"),
    "mobility_bedridden": ("卧床", "bedridden"),
    "terminal_active": ("正常", "active"),
    "terminal_silent": ("失联", "silent"),
    "terminal_fault": ("故障", "fault"),
    "terminal_retired": ("已停用", "retired"),
    "status_new": ("新告警", "new"),
    "status_claimed": ("处理中", "claimed"),
    "status_handled": ("已处理", "handled"),
    "unknown_caller": ("未知来电", "unknown caller"),
    "search": ("查找老人", "Find an elder"),
    "search_hint": (
        "姓名、拼音首字母（wxy）、拼音、电话或终端编号",
        "name, pinyin initials (wxy), pinyin, phone or terminal serial",
    ),
    "no_results": ("没有找到", "Nothing found"),
    "screen_pop": ("老人信息", "Elder"),
    "age": ("岁", "years"),
    "address": ("地址", "Address"),
    "access_notes": ("入户须知", "Access notes"),
    "medical_notes": ("病史", "Medical notes"),
    "medications": ("用药", "Medications"),
    "allergies": ("过敏", "Allergies"),
    "language": ("语言", "Language"),
    "mobility": ("行动能力", "Mobility"),
    "lives_alone": ("独居", "Lives alone"),
    "phone": ("电话", "Phone"),
    "contacts": ("紧急联系人（按拨打顺序）", "Emergency contacts (in call order)"),
    "terminal": ("终端", "Terminal"),
    "battery": ("电量", "Battery"),
    "last_seen": ("最后在线", "Last seen"),
    "open_cases": ("未办结工单", "Open cases"),
    "recent_cases": ("近期工单", "Recent cases"),
    "none": ("无", "none"),
    "outcome": ("处理结果", "Outcome"),
    "outcome_talked": ("已通话", "Talked with the elder"),
    "outcome_no_answer": ("无人应答", "No answer"),
    "outcome_false_alarm": ("误报", "False alarm"),
    "outcome_called_family": ("已联系家属", "Called the family"),
    "outcome_called_120": ("已呼叫120", "Called 120"),
    "outcome_sent_volunteers": ("已派志愿者", "Sent volunteers"),
    "note": ("备注", "Note"),
    "reason": ("原因（误报必填）", "Reason (required for a false alarm)"),
    "save_outcome": ("保存结果", "Save outcome"),
    "outcome_saved": ("已保存，告警已处理", "Saved; the alarm is handled"),
    "case": ("工单", "Case"),
    "case_state": ("状态", "State"),
    "state_dispatch": ("派遣", "dispatch"),
    "state_handle": ("处置", "handle"),
    "state_feedback": ("反馈", "feedback"),
    "state_closed": ("办结", "closed"),
    "state_cancelled": ("已取消", "cancelled"),
    "state_escalated": ("升级", "escalated"),
    "category": ("服务类别", "Category"),
    "item": ("服务项目", "Item"),
    "summary": ("情况说明", "Summary"),
    "set_item": ("确定项目", "Set item"),
    "candidates": ("推荐志愿者", "Ranked volunteers"),
    "no_candidates": ("没有合适的志愿者", "No suitable volunteer"),
    "distance": ("距离", "Distance"),
    "score": ("得分", "Score"),
    "dispatch": ("一键派单", "Dispatch"),
    "dispatched": ("已派单，第 {wave} 轮，{n} 位志愿者", "Dispatched: wave {wave}, {n} volunteers"),
    "offers": ("派单记录", "Offers"),
    "offer_pending": ("待回复", "pending"),
    "offer_accepted": ("已接单", "accepted"),
    "offer_declined": ("已拒绝", "declined"),
    "offer_expired": ("已超时", "expired"),
    "offer_stood_down": ("无需前往", "stood down"),
    "offer_dropped": ("已退单", "dropped"),
    "offer_completed": ("已完成", "completed"),
    "close_case": ("办结", "Close"),
    "satisfied": ("老人满意", "Elder satisfied"),
    "cancel_case": ("取消工单", "Cancel case"),
    "cancel_reason": ("取消原因", "Reason for cancelling"),
    "error": ("出错了", "Error"),
    "select": ("请选择", "Choose"),
    "seconds": ("秒", "s"),
    # The supervisor's view (班长看板) and its flag in the live queue.
    "supervisor_view": ("班长看板", "Supervisor view"),
    "console_link": ("接警台", "Console"),
    "forbidden": ("仅班长和管理员可查看此页", "Only supervisors and admins can see this page"),
    "today_alarms": ("今日告警", "Today's alarms"),
    "today_cases": ("今日工单（按当前状态）", "Today's cases (by their state now)"),
    "total": ("合计", "Total"),
    "compliance": ("接听及时率", "Answer-time compliance"),
    "compliance_hint": (
        "接听时间 = 接警员接听（认领）时刻 − 告警到达时刻；仍在等待且未超过该时限的告警暂不计入",
        "Answer time = the operator's claim − the alarm's arrival; alarms still waiting and not "
        "yet past a mark are not counted yet",
    ),
    "group_all": ("全部告警", "All alarms"),
    "group_life_safety": ("紧急求助", "Life safety"),
    "within_s": ("{s} 秒内接听", "answered within {s} s"),
    "answered": ("已接听", "Answered"),
    "waiting": ("等待中", "Waiting"),
    "median_answer": ("接听时间中位数", "Median answer time"),
    "late_cases": ("超过目标时间未办结的工单", "Open cases past their target"),
    "target": ("目标时间", "Target"),
    "late_by": ("超时", "Late by"),
    "silent_terminals": ("超过上报间隔未上报的终端", "Terminals silent past their report interval"),
    "report_interval": ("上报间隔", "Report interval"),
    "silent_for": ("未上报时长", "Silent for"),
    "escalated_visits": ("已升级的探访", "Escalated visits"),
    "window_end": ("截止日期", "Window end"),
    "volunteer": ("志愿者", "Volunteer"),
    "on_duty": ("当前在岗志愿者", "Volunteers on duty now"),
    "community": ("社区", "Community"),
    "unclaimed": (
        "超过 {s} 秒无人接听的紧急告警",
        "Life-safety alarms unclaimed for more than {s} s",
    ),
    "flag_banner": (
        "⚠ {n} 条紧急告警超过 {s} 秒无人接听",
        "⚠ {n} life-safety alarms unclaimed for more than {s} s",
    ),
    "flag": ("超时未接", "unclaimed too long"),
    "updated": ("更新于", "Updated"),
    "showing_first": ("仅显示前 {n} 条", "showing the first {n}"),
    "minutes": ("分钟", "min"),
    "hours": ("小时", "h"),
    "visit_monthly": ("月度探访", "monthly"),
    "visit_weekly": ("每周探访", "weekly"),
    "visit_quarterly": ("季度探访", "quarterly"),
    "visit_extra": ("加访", "extra"),
    "voice": ("通话", "Voice"),
    "voice_connect": ("接通通话", "Connect call"),
    "voice_requested": ("正在请求…", "requesting…"),
    "voice_connecting": ("正在呼叫您的话机，请摘机", "ringing your phone: pick it up"),
    "voice_connected": ("通话中", "connected"),
    "voice_ended": ("通话已结束", "call ended"),
    "voice_failed": ("未能接通", "not connected"),
    "voice_mode_bridge": ("老人原呼叫", "the elder's own call"),
    "voice_mode_call_back": ("回拨老人", "calling the elder back"),
    "voice_ended_by_elder": ("老人挂机", "the elder hung up"),
    "voice_ended_by_operator": ("接警员挂机", "you hung up"),
    "voice_ended_by_centre": ("系统结束", "ended by the centre"),
    "voice_recording": ("通话录音", "Recording"),
    # The database is down (issue #7; docs/RUNBOOK.md has the section the banner names).
    "db_down": (
        "⚠ 数据库不可用{since}：新告警现在无法入库，终端会自动重拨，数据库恢复后告警会进入队列；"
        "本页显示的不是最新情况。请按值班手册 docs/RUNBOOK.md「接警台显示数据库不可用」处理。",
        "⚠ Database down{since}: new alarms cannot be recorded right now; terminals will retry "
        "and their alarms reach the queue once it is back; this page is not up to date. Follow "
        "the runbook, docs/RUNBOOK.md “The console says the database is down”.",
    ),
    "db_down_since": ("（{time} 起）", " (since {time})"),
    "db_down_page": (
        "数据库恢复后本页会自动打开。",
        "This page opens by itself once the database is back.",
    ),
}


def pick_lang(request: Request) -> str:
    """The page language: ``?lang=``, then the cookie, then Chinese."""
    wanted = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE) or ""
    return wanted if wanted in LANGUAGES else DEFAULT_LANG


def strings(lang: str) -> dict[str, str]:
    """The whole table in one language."""
    index = LANGUAGES.index(lang) if lang in LANGUAGES else 0
    return {key: pair[index] for key, pair in STRINGS.items()}
