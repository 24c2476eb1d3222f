// English and Korean labels. The default follows navigator.language; the
// choice is kept in localStorage.

const LABELS = {
  en: {
    title: "tsrmon", overview: "Overview", history: "History", machine: "Machine",
    machines: "Machines", language: "한국어", live_link: "Live",
    conn_connected: "Live: connected", conn_connecting: "Live: connecting…",
    conn_reconnecting: "Live: reconnecting…", conn_offline: "Live: offline",
    conn_browser_offline: "Offline (no network)", rest_error: "Server not answering",
    daq_connected: "DAQ connected", daq_offline: "DAQ offline", unknown: "unknown",
    last_frame: "Last frame", never: "never", ago: "{0} ago", sensors: "Sensors",
    frames: "Frames", refused: "Refused frames", anomaly: "Anomaly", normal: "Normal",
    anomalous: "ANOMALY", no_anomaly_yet: "No anomaly report yet", score: "Score",
    threshold: "Threshold", alarms: "Alarms", no_alarms: "No active alarms",
    alarms_unavailable: "Alarms are not available on this server",
    no_machines: "No machines yet. They appear when a DAQ connects or data exists.",
    live_charts: "Live", per_second: "per second", interval_mean: "interval mean",
    waiting_data: "Waiting for data…", anomaly_history: "Anomaly history",
    recent_anomalies: "Recent anomalies (30 days)", start: "From", end: "To",
    load: "Show", csv: "Download CSV", level: "Level", hour: "Hour", day: "Day",
    month: "Month", year: "Year", time: "Time", sensor: "Sensor", mean: "Mean",
    min: "Min", max: "Max", rms: "RMS", count: "Count", rows: "{0} rows", row1: "1 row",
    showing: "showing the newest {0} of {1} rows", no_rows: "No data in this range",
    loading: "Loading…", error: "Error: {0}", token_title: "API token required",
    token_text: "This server needs an API token. It is kept in this browser only.",
    token_save: "Save", token_clear: "Forget token", machine_name: "Machine",
    received: "Received", severity: "Severity", rule: "Rule", value: "Value",
    state: "State", message: "Message", alarm_level: "Level", live_alarms: "Alarm events",
    bad_range: "The start date is after the end date", s: "s", m: "min", h: "h", d: "d",
    last_seen: "Last seen", last_anomaly: "Last anomaly",
    analytics: "Vibration analysis", waiting_spectrum: "Waiting for the first minute spectrum (sensors sampled at 1 kHz or more)…",
    spectrum: "Spectrum (latest minute)", waterfall: "Waterfall (last 6 h)", velocity_rms: "Velocity RMS (ISO 10816-3)",
    velocity_rms_unit: "velocity RMS (mm/s)", amplitude_rms: "RMS amplitude per line ({0})",
    waterfall_rows: "{0} rows", iso_group: "group {0}, {1} foundation",
    skewness: "Skewness", kurtosis: "Kurtosis", peak: "Peak", peak_to_peak: "Peak-peak", crest: "Crest",
  },
  ko: {
    title: "tsrmon", overview: "개요", history: "이력", machine: "설비",
    machines: "설비", language: "English", live_link: "실시간",
    conn_connected: "실시간: 연결됨", conn_connecting: "실시간: 연결 중…",
    conn_reconnecting: "실시간: 재연결 중…", conn_offline: "실시간: 오프라인",
    conn_browser_offline: "오프라인 (네트워크 없음)", rest_error: "서버 응답 없음",
    daq_connected: "DAQ 연결됨", daq_offline: "DAQ 연결 끊김", unknown: "알 수 없음",
    last_frame: "마지막 데이터", never: "없음", ago: "{0} 전", sensors: "센서",
    frames: "수신 프레임", refused: "거부된 프레임", anomaly: "이상 감지", normal: "정상",
    anomalous: "이상", no_anomaly_yet: "이상 감지 보고 없음", score: "점수",
    threshold: "임계값", alarms: "알람", no_alarms: "활성 알람 없음",
    alarms_unavailable: "이 서버에는 알람 기능이 없습니다",
    no_machines: "아직 설비가 없습니다. DAQ가 연결되거나 데이터가 있으면 표시됩니다.",
    live_charts: "실시간", per_second: "초당", interval_mean: "구간 평균",
    waiting_data: "데이터 대기 중…", anomaly_history: "이상 감지 이력",
    recent_anomalies: "최근 이상 감지 (30일)", start: "시작", end: "종료",
    load: "조회", csv: "CSV 다운로드", level: "단위", hour: "시간", day: "일",
    month: "월", year: "연", time: "시각", sensor: "센서", mean: "평균",
    min: "최소", max: "최대", rms: "RMS", count: "개수", rows: "{0}행", row1: "1행",
    showing: "전체 {1}행 중 최근 {0}행 표시", no_rows: "이 기간에 데이터가 없습니다",
    loading: "불러오는 중…", error: "오류: {0}", token_title: "API 토큰 필요",
    token_text: "이 서버는 API 토큰이 필요합니다. 토큰은 이 브라우저에만 저장됩니다.",
    token_save: "저장", token_clear: "토큰 삭제", machine_name: "설비",
    received: "수신", severity: "심각도", rule: "규칙", value: "값",
    state: "상태", message: "메시지", alarm_level: "기준값", live_alarms: "알람 이벤트",
    bad_range: "시작 날짜가 종료 날짜보다 늦습니다", s: "초", m: "분", h: "시간", d: "일",
    last_seen: "마지막 수신", last_anomaly: "마지막 이상",
    analytics: "진동 분석", waiting_spectrum: "첫 1분 스펙트럼을 기다리는 중 (1 kHz 이상 샘플링 센서)…",
    spectrum: "스펙트럼 (최근 1분)", waterfall: "워터폴 (최근 6시간)", velocity_rms: "속도 RMS (ISO 10816-3)",
    velocity_rms_unit: "속도 RMS (mm/s)", amplitude_rms: "라인별 RMS 진폭 ({0})",
    waterfall_rows: "{0}행", iso_group: "그룹 {0}, 기초 {1}",
    skewness: "왜도", kurtosis: "첨도", peak: "피크", peak_to_peak: "피크-피크", crest: "파고율",
  },
};

const KEY = "tsrmon.lang";
let lang = pick();

function pick() {
  let saved = null;
  try { saved = localStorage.getItem(KEY); } catch (e) { /* storage disabled */ }
  if (saved && LABELS[saved]) return saved;
  const nav = (navigator.languages && navigator.languages[0]) || navigator.language || "en";
  return nav.toLowerCase().startsWith("ko") ? "ko" : "en";
}

export function t(key, ...args) {
  const text = (LABELS[lang] && LABELS[lang][key]) || LABELS.en[key] || key;
  return args.length ? text.replace(/\{(\d)\}/g, (_, i) => String(args[+i])) : text;
}

export function language() {
  return lang;
}

export function setLanguage(next) {
  lang = LABELS[next] ? next : "en";
  try { localStorage.setItem(KEY, lang); } catch (e) { /* storage disabled */ }
  document.documentElement.lang = lang;
}

export function toggleLanguage() {
  setLanguage(lang === "ko" ? "en" : "ko");
}

export function rows(n) {
  return n === 1 ? t("row1") : t("rows", n);
}

export function age(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return t("never");
  const s = Math.max(0, Math.round(seconds));
  let text;
  if (s < 90) text = `${s} ${t("s")}`;
  else if (s < 5400) text = `${Math.round(s / 60)} ${t("m")}`;
  else if (s < 172800) text = `${Math.round(s / 3600)} ${t("h")}`;
  else text = `${Math.round(s / 86400)} ${t("d")}`;
  return t("ago", text);
}
