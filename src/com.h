/* COM helpers shared by hostmem's objects. Internal to hostmem. */
#ifndef HOSTMEM_SRC_COM_H
#define HOSTMEM_SRC_COM_H

#include <hostmem/hostmem.h>

/* QueryInterface of an object with one interface besides IUnknown (every hostmem object): self for IUnknown and
 * `own`, with a reference added; E_NOINTERFACE and *ppv NULL for anything else; E_POINTER for NULL arguments.
 * Works for any of the contract's interfaces, since each begins with IUnknown's three slots. */
static inline HRESULT hm_com_query(void *self, const IID *own, REFIID riid, void **ppv)
{
    if (!ppv)
        return E_POINTER;
    *ppv = NULL;
    if (!riid)
        return E_POINTER;
    if (!IsEqualIID(riid, &IID_IUnknown) && !IsEqualIID(riid, own))
        return E_NOINTERFACE;
    *ppv = self;
    IUnknown_AddRef((IUnknown *)self);
    return S_OK;
}

#endif
