!> example_md.f90 -- velocity-Verlet MD of one molecule with a SmoothFlow model, through the
!> Fortran module smoothflow (smoothflow.f90): what an MD engine written in Fortran does to
!> use the flow as its potential.
!>
!>     example_md MODEL START OUT [STEPS [DT]]
!>     example_md --version
!>
!> The same program as wrappers/c/example_md.c, operation for operation (the parentheses
!> below fix the C evaluation order), so the two write the same numbers: arguments, the
!> START file (wrappers/data/ala2_start.txt: '#' comment lines, the number of atoms N, then
!> N lines "mass x y z vx vy vz" in amu, nm, nm/ps, model atom order), the OUT file (one
!> line per step "step time E_pot E_kin E_tot", ps and kJ/mol, step 0 the start) and the
!> fluctuation ratio RMS(E_tot - <E_tot>) / RMS(E_kin - <E_kin>) over steps 0..STEPS of
!> studies/alanine_dipeptide/energy_conservation.py.  Defaults: 1000 steps of 0.0005 ps.
!> Exit status 0 on success, 1 on any error (the message names what is wrong), 2 on bad usage.
program example_md
    use, intrinsic :: iso_c_binding, only: c_double
    use, intrinsic :: iso_fortran_env, only: error_unit, output_unit, int64
    use smoothflow
    implicit none

    character(len=4096) :: model_path, start_path, out_path, arg
    integer :: nargs, n, ios, u, i, k
    integer(int64) :: steps, step
    real(c_double) :: dt, epot
    real(c_double), allocatable :: mass(:), x(:, :), v(:, :), f(:, :), etot(:), ekin(:)
    type(sf_model) :: model
    type(sf_workspace) :: ws
    type(sf_error) :: err

    nargs = command_argument_count()
    if (nargs == 1) then
        call get_command_argument(1, arg)
        if (trim(arg) == '--version') then
            write (output_unit, '(4a)') 'example_md: bindings ', version_text(), ', library ', sf_library_version()
            if (.not. sf_library_compatible()) stop 1
            stop
        end if
    end if
    if (nargs < 3 .or. nargs > 5) then
        write (error_unit, '(a)') 'usage: example_md MODEL START OUT [STEPS [DT_PS]]'
        stop 2
    end if
    if (.not. sf_library_compatible()) then
        write (error_unit, '(4a)') 'example_md: libsmoothflow ', sf_library_version(), &
            ' is not compatible with the bindings ', version_text()
        stop 1
    end if
    call get_command_argument(1, model_path)
    call get_command_argument(2, start_path)
    call get_command_argument(3, out_path)
    steps = 1000
    dt = 0.0005_c_double
    if (nargs > 3) then
        call get_command_argument(4, arg)
        read (arg, *, iostat=ios) steps
        if (ios /= 0 .or. steps < 1 .or. steps > 100000000) then
            write (error_unit, '(3a)') "example_md: STEPS must be an integer from 1 to 100000000, not '", &
                trim(arg), "'"
            stop 2
        end if
    end if
    if (nargs > 4) then
        call get_command_argument(5, arg)
        read (arg, *, iostat=ios) dt
        if (ios /= 0 .or. .not. (dt > 0 .and. dt <= huge(dt))) then
            write (error_unit, '(3a)') "example_md: DT must be a positive number of ps, not '", trim(arg), "'"
            stop 2
        end if
    end if

    call read_start(trim(start_path))

    if (sf_load(model, trim(model_path), err) /= SF_OK) call fail(sf_message(err))
    if (sf_num_atoms(model) /= n) then
        write (error_unit, '(3a,i0,3a,i0)') "example_md: the model '", trim(model_path), "' has ", &
            sf_num_atoms(model), " atoms, the start file '", trim(start_path), "' ", n
        stop 1
    end if
    if (sf_new_workspace(ws, model, 1, err) /= SF_OK) call fail(sf_message(err))
    allocate (f(3, n), etot(0:steps), ekin(0:steps))

    open (newunit=u, file=trim(out_path), status='replace', action='write', iostat=ios)
    if (ios /= 0) call fail("cannot write '" // trim(out_path) // "'")
    write (u, '(a,es24.16e3,4a)') '# velocity Verlet, dt = ', dt, ' ps, model ', trim(model_path), &
        ', start ', trim(start_path)
    write (u, '(a)') '# step time(ps) E_pot E_kin E_tot (kJ/mol)'

    ! Velocity Verlet: half kick, drift, new forces, half kick.
    do step = 0, steps
        if (step > 0) then
            do i = 1, n
                do k = 1, 3
                    v(k, i) = v(k, i) + ((0.5_c_double * dt) * f(k, i)) / mass(i)
                    x(k, i) = x(k, i) + dt * v(k, i)
                end do
            end do
        end if
        if (sf_evaluate(model, ws, x, epot, f, err=err) /= SF_OK) then
            write (error_unit, '(a,i0,2a)') 'example_md: step ', step, ': ', sf_message(err)
            stop 1
        end if
        if (step > 0) then
            do i = 1, n
                do k = 1, 3
                    v(k, i) = v(k, i) + ((0.5_c_double * dt) * f(k, i)) / mass(i)
                end do
            end do
        end if
        ekin(step) = kinetic_energy()
        etot(step) = epot + ekin(step)
        write (u, '(i0,4(1x,es24.16e3))') step, real(step, c_double) * dt, epot, ekin(step), etot(step)
    end do
    close (u, iostat=ios)
    if (ios /= 0) call fail("error writing '" // trim(out_path) // "'")

    write (output_unit, '(a,i0,a,es10.3e1,a,es17.10e2,a,es17.10e2,a)') 'example_md (Fortran): ', steps, &
        ' steps of ', dt, ' ps; E_tot ', etot(0), ' -> ', etot(steps), ' kJ/mol'
    write (output_unit, '(a,es23.16e2)') 'fluctuation ratio RMS(dE_tot)/RMS(dE_kin) = ', &
        rms_deviation(etot) / rms_deviation(ekin)
    call sf_free(ws)
    call sf_free(model)

contains

    function version_text() result(s)
        character(len=:), allocatable :: s
        character(len=32) :: buffer
        write (buffer, '(i0,".",i0,".",i0)') SF_VERSION_MAJOR, SF_VERSION_MINOR, SF_VERSION_PATCH
        s = trim(buffer)
    end function version_text

    subroutine fail(message)
        character(len=*), intent(in) :: message
        write (error_unit, '(2a)') 'example_md: ', message
        stop 1
    end subroutine fail

    !> Reads the start file into n, mass, x, v; stops with a message naming the file and line.
    subroutine read_start(path)
        character(len=*), intent(in) :: path
        character(len=1024) :: line, msg
        integer :: unit, lineno, atom
        open (newunit=unit, file=path, status='old', action='read', iostat=ios, iomsg=msg)
        if (ios /= 0) call fail("cannot open start file '" // path // "': " // trim(msg))
        n = 0
        atom = 0
        lineno = 0
        do
            read (unit, '(a)', iostat=ios) line
            if (ios /= 0) exit
            lineno = lineno + 1
            if (line(1:1) == '#' .or. len_trim(line) == 0) cycle
            if (n == 0) then
                read (line, *, iostat=ios) n
                if (ios /= 0 .or. n <= 0) then
                    write (msg, '(a,i0,a)') ' line ', lineno, ': expected the number of atoms'
                    call fail(path // trim(msg))
                end if
                allocate (mass(n), x(3, n), v(3, n))
                cycle
            end if
            atom = atom + 1
            read (line, *, iostat=ios) mass(atom), x(:, atom), v(:, atom)
            if (ios /= 0) then
                write (msg, '(a,i0,a,i0)') ' line ', lineno, ": expected 'mass x y z vx vy vz' of atom ", atom - 1
                call fail(path // trim(msg))
            end if
            if (.not. mass(atom) > 0) then
                write (msg, '(a,i0,a,i0,a,g0,a)') ' line ', lineno, ': atom ', atom - 1, ' has mass ', &
                    mass(atom), '; masses must be positive'
                call fail(path // trim(msg))
            end if
            if (atom == n) exit
        end do
        close (unit)
        if (n == 0 .or. atom < n) then
            write (msg, '(a,i0,a,i0,a)') ' ends after ', atom, ' of ', n, ' atoms'
            call fail(path // trim(msg))
        end if
    end subroutine read_start

    real(c_double) function kinetic_energy()
        integer :: a, c
        kinetic_energy = 0
        do a = 1, n
            do c = 1, 3
                kinetic_energy = kinetic_energy + ((0.5_c_double * mass(a)) * v(c, a)) * v(c, a)
            end do
        end do
    end function kinetic_energy

    !> RMS of a - <a> (numpy's std with ddof 0): two passes, in index order.
    real(c_double) function rms_deviation(a)
        real(c_double), intent(in) :: a(0:)
        real(c_double) :: mean, total
        integer(int64) :: j
        mean = 0
        do j = 0, size(a, kind=int64) - 1
            mean = mean + a(j)
        end do
        mean = mean / real(size(a, kind=int64), c_double)
        total = 0
        do j = 0, size(a, kind=int64) - 1
            total = total + (a(j) - mean) * (a(j) - mean)
        end do
        rms_deviation = sqrt(total / real(size(a, kind=int64), c_double))
    end function rms_deviation

end program example_md
