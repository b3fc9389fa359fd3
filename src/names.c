/* Names of HRESULTs, methods and critical levels, for reports, fault specs and traces. */
#include "internal.h"

#include <hostmem/hostmem.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

typedef struct hr_entry {
    HRESULT value;
    const char *name;
    const char *text;
} hr_entry;

static const hr_entry hr_table[] = {
#define HM_HR_ENTRY_(name, value, text) {(HRESULT)(value), #name, text},
    HM_HRESULT_MAP(HM_HR_ENTRY_)
#undef HM_HR_ENTRY_
};

static const hr_entry *hr_find(HRESULT hr)
{
    for (size_t i = 0; i < sizeof hr_table / sizeof hr_table[0]; i++)
        if (hr_table[i].value == hr)
            return &hr_table[i];
    return NULL;
}

HM_API const char *hm_hr_name(HRESULT hr)
{
    static _Thread_local char unknown[16];
    const hr_entry *e = hr_find(hr);
    if (e)
        return e->name;
    snprintf(unknown, sizeof unknown, "0x%08X", (unsigned)hr);
    return unknown;
}

HM_API const char *hm_hr_text(HRESULT hr)
{
    const hr_entry *e = hr_find(hr);
    return e ? e->text : "unknown HRESULT";
}

HM_API int hm_hr_parse(const char *text, size_t len, HRESULT *out)
{
    if (!text || !out || len == 0)
        return -1;
    for (size_t i = 0; i < sizeof hr_table / sizeof hr_table[0]; i++) {
        const char *name = hr_table[i].name;
        if (strlen(name) == len && strncasecmp(name, text, len) == 0) {
            *out = hr_table[i].value;
            return 0;
        }
    }
    /* A number: 0x8007000E, or decimal. */
    char buf[24];
    if (len >= sizeof buf)
        return -1;
    memcpy(buf, text, len);
    buf[len] = '\0';
    if (!isdigit((unsigned char)buf[0]))
        return -1;
    char *end;
    unsigned long long v = strtoull(buf, &end, 0);
    if (*end != '\0' || v > 0xFFFFFFFFull)
        return -1;
    *out = (HRESULT)(uint32_t)v;
    return 0;
}

static const char *const method_names[HM_METHOD_COUNT] = {
#define HM_METHOD_NAME_(id, name) name,
    HM_METHOD_MAP(HM_METHOD_NAME_)
#undef HM_METHOD_NAME_
};

HM_API const char *hm_method_name(hm_method m)
{
    return (unsigned)m < HM_METHOD_COUNT ? method_names[m] : "(unknown method)";
}

HM_API hm_method hm_method_parse(const char *text, size_t len)
{
    if (!text)
        return HM_METHOD_COUNT;
    for (int m = 0; m < HM_METHOD_COUNT; m++)
        if (strlen(method_names[m]) == len && strncasecmp(method_names[m], text, len) == 0)
            return (hm_method)m;
    if (len == 12 && strncasecmp(text, "CreateMAlloc", len) == 0)
        return HM_METHOD_CREATE_MALLOC;
    return HM_METHOD_COUNT;
}

HM_API const char *hm_level_name(EMemoryCriticalLevel level)
{
    switch (level) {
    case eTaskCritical: return "eTaskCritical";
    case eAppDomainCritical: return "eAppDomainCritical";
    case eProcessCritical: return "eProcessCritical";
    }
    return "(invalid level)";
}

HM_API const char *hm_level_short(EMemoryCriticalLevel level)
{
    switch (level) {
    case eTaskCritical: return "task";
    case eAppDomainCritical: return "appdomain";
    case eProcessCritical: return "process";
    }
    return "invalid";
}
